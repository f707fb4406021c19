"""The multiprocess metrics directory: files of the live workers, one archive of the dead.

Under gunicorn each worker writes its samples to files of its own in PROMETHEUS_MULTIPROC_DIR,
`<kind>_<pid>.db`, and a scrape adds up every file there. The files of a worker that exits
would stay for good: replaced by `max_requests`, timeouts and reloads, workers would leave
thousands, and every scrape would read them all. So when a worker exits, the master folds
its files into one archive per kind, `<kind>_archive.db`, and deletes them: the directory
holds files for the live workers only, and every total stays what it was.

Scrapes (`LockedMultiProcessCollector`) take a shared lock on the directory, the master an
exclusive one while it deletes and folds: a scrape sees a dead worker's samples either in
its own files or in the archive, never in both nor in neither, and no file vanishes while
it reads. A fork waits for a scrape to end: with METRICS_PORT the master scrapes in a
thread (metrics_server.py), and a worker forked meanwhile would inherit the lock file, and
with it the shared lock, for life: the master's next fold would wait for that worker to exit.
A scrape adds the files up as prometheus_client's merge does, but keeps what it learnt of
each file's keys for the next one (`_SampleFiles`): most of a scrape's cost was decoding them.

Gauges in mode `all` (prometheus_client's default) export one series per process, the dead
ones included, labelled with its pid: one archive cannot keep those apart, so their files
stay. The `live*` modes need no folding: `mark_process_dead` deletes their files.
"""

import fcntl
import glob
import json
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from prometheus_client import Metric, multiprocess
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample as MetricSample

from .metrics_exposition import IdentifiedMetric, written_value

LOCK_FILE = "fold.lock"  # not *.db: prometheus_client reads every .db file as samples
ARCHIVE = "archive"  # in place of the pid: a gauge's file name gives its `pid` label

Sample = tuple[float, float]  # value, timestamp

_scraping = threading.Lock()
os.register_at_fork(
    before=_scraping.acquire, after_in_parent=_scraping.release, after_in_child=_scraping.release
)
Combine = Callable[[Sample, Sample], Sample]
FileKind = tuple[str, str, str]  # type, gauge mode, pid label: from `<type>[_<mode>]_<pid>.db`
Labels = tuple[tuple[str, str], ...]
SampleId = tuple[str, Labels]  # sample name, labels

_HEADER = 8  # bytes: how many are used, then padding
_unpack_int = struct.Struct("i").unpack_from
_files: "_SampleFiles | None" = None  # one directory's, from the last scrape


def _add(archived: Sample, dead: Sample) -> Sample:
    return archived[0] + dead[0], max(archived[1], dead[1])


def _lower(archived: Sample, dead: Sample) -> Sample:
    return min(archived, dead, key=lambda sample: sample[0])


def _higher(archived: Sample, dead: Sample) -> Sample:
    return max(archived, dead, key=lambda sample: sample[0])


def _later(archived: Sample, dead: Sample) -> Sample:
    return max(archived, dead, key=lambda sample: sample[1])


# How a scrape combines the files of one kind, so the archive combines them the same way:
# the result does not depend on which samples were folded already.
COMBINE: dict[str, Combine] = {
    "counter": _add,
    "histogram": _add,  # each bucket holds its own count: buckets add up as counters
    "summary": _add,
    "gauge_sum": _add,
    "gauge_min": _lower,
    "gauge_max": _higher,
    "gauge_mostrecent": _later,
}


class LockedMultiProcessCollector(MultiProcessCollector):
    """Reads every file of the directory under the shared lock, as prometheus_client's merge."""

    def collect(self) -> Iterable[Metric]:
        global _files
        with _scraping, locked_for_scrape(self._path):
            if _files is None or _files.directory != self._path:
                _files = _SampleFiles(self._path)
            return _files.merge(glob.glob(os.path.join(self._path, "*.db")))


class _SampleFiles:
    """One directory's files as a scrape left them, so the next reads their values only.

    prometheus_client's merge decodes every key of every file on every scrape (JSON, one
    Python object per sample): at 8 workers and 100 routes, 13,000 samples and 90 ms. Keys
    never change place in a file, so only the values are read again; samples are added up
    by their raw key, and each distinct key is decoded once for all the files, into what a
    scrape needs of it: its sample's id and, for a bucket, its bound and the id it is
    written under.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._layouts: dict[str, _Layout] = {}
        self._series: dict[str, _Series] = {}

    def merge(self, paths: list[str]) -> Iterable[Metric]:
        for gone in self._layouts.keys() - set(paths):
            self._layouts.pop(gone).close()
        combined: dict[FileKind, dict[str, Sample]] = {}
        for path in paths:
            kind = _kind_of(path)
            if layout := self._layout(path):
                _combine(combined.setdefault(kind, {}), *layout.read(), _scrape_combine(kind))
        return self._accumulate(combined)

    def _layout(self, path: str) -> "_Layout | None":
        layout = self._layouts.get(path)
        try:
            if layout is None or os.stat(path).st_ino != layout.inode:
                self._forget(path)
                layout = self._layouts[path] = _Layout(path)
        except FileNotFoundError:
            self._forget(path)  # deleted since the glob: nothing of it to read
            return None
        return layout

    def _forget(self, path: str) -> None:
        if layout := self._layouts.pop(path, None):
            layout.close()

    def _accumulate(self, combined: dict[FileKind, dict[str, Sample]]) -> Iterable[Metric]:
        """prometheus_client's _accumulate_metrics, from one sample per key and kind of file."""
        series, self._series = self._series, {}  # forget the keys that went away
        families: dict[str, _Family] = {}
        for (typ, mode, pid), samples in combined.items():
            for key, (value, timestamp) in samples.items():
                one = self._series[key] = series.get(key) or _Series.of(key)
                if (family := families.get(one.metric)) is None:
                    family = families[one.metric] = _Family(one, typ)
                if family.histogram and one.bound is not None:
                    family.add_to_bucket(one, one.bound, value)
                elif family.type != "gauge":
                    family.add(one.id, value)
                elif pid:  # modes all and liveall: one series per process
                    family.values[(one.id[0], (*one.id[1], ("pid", pid)))] = value
                elif timestamp > 0 or not mode.endswith("mostrecent"):  # as prometheus_client
                    family.values[one.id] = value  # the files of this mode are combined already
        return [family.metric() for family in families.values()]


class _Family:
    """The samples of one metric in a scrape, added up by series."""

    def __init__(self, first: "_Series", typ: str) -> None:
        self.name, self.help_text, self.type = first.metric, first.help_text, typ
        self.histogram = typ == "histogram"
        self.values: dict[SampleId, float] = {}
        # A histogram's buckets by labels and bound: their own count, and their sample id.
        self.buckets: dict[Labels, dict[float, tuple[float, SampleId]]] = {}

    def add(self, sample_id: SampleId, value: float) -> None:
        self.values[sample_id] = self.values.get(sample_id, 0.0) + value

    def add_to_bucket(self, bucket: "_Series", bound: float, value: float) -> None:
        by_bound = self.buckets.setdefault(bucket.labels_but_le, {})
        count = by_bound[bound][0] if bound in by_bound else 0.0
        by_bound[bound] = (count + value, bucket.bucket_id)

    def metric(self) -> Metric:
        self._add_cumulative_buckets()
        metric = IdentifiedMetric(self.name, self.help_text, self.type)
        metric.sample_ids = list(self.values)
        metric.samples = [
            MetricSample(name, dict(labels), value) for (name, labels), value in self.values.items()
        ]
        return metric

    def _add_cumulative_buckets(self) -> None:
        """Each bucket counts the samples of the lower ones too, and _count is the last one."""
        for labels, by_bound in self.buckets.items():
            count = 0.0
            for bound in sorted(by_bound):
                value, sample_id = by_bound[bound]
                count += value
                self.values[sample_id] = count
            self.values[(f"{self.name}_count", labels)] = count


class _Series(NamedTuple):
    """What a file's key says: a sample of a metric, decoded once and kept across scrapes."""

    metric: str
    help_text: str
    id: SampleId
    bound: float | None  # a histogram bucket's upper bound
    labels_but_le: Labels
    bucket_id: SampleId  # a bucket's counting the lower ones: `le` written last (others: id)

    @classmethod
    def of(cls, key: str) -> "_Series":
        metric, name, labels, help_text = json.loads(key)
        sorted_labels = tuple(sorted(labels.items()))
        but_le = tuple(label for label in sorted_labels if label[0] != "le")
        sample_id = (name, sorted_labels)
        if (le := labels.get("le")) is None:
            return cls(metric, help_text, sample_id, None, but_le, sample_id)
        bound = float(le)
        bucket_id = (f"{metric}_bucket", (*but_le, ("le", written_value(bound))))
        return cls(metric, help_text, sample_id, bound, but_le, bucket_id)


class _Layout:
    """Where the keys of one sample file are (prometheus_client's mmap_dict format).

    A process only ever appends keys, so their places stay valid while the file is the
    same one. Held open, the file keeps its inode: a file of the same name on another
    inode is another file (a worker's files deleted, then a new worker with its pid).
    A deleted file is let go at the next scrape in this process.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.inode = os.fstat(self.fd).st_ino
        self._forget_keys()

    def _forget_keys(self) -> None:
        self.used = _HEADER  # bytes scanned for keys so far
        self.keys: list[str] = []
        self.indexes: list[int] = []  # of each key's value, counted in doubles

    def read(self) -> tuple[list[str], list[float], list[float]]:
        header = os.pread(self.fd, _HEADER, 0)
        used = _unpack_int(header)[0] if len(header) == _HEADER else 0
        if used < _HEADER:
            return [], [], []  # a starting worker has not sized its file yet
        if used < self.used:
            self._forget_keys()  # written anew in place: never by prometheus_client, but cheap
        data = os.pread(self.fd, used, 0)
        self._scan(data, self.used, used)
        # Entries end on 8-byte boundaries, and hold native-endian doubles as `d` reads them.
        doubles = memoryview(data).cast("d")
        values = [doubles[index] for index in self.indexes]
        timestamps = [doubles[index + 1] for index in self.indexes]
        return self.keys, values, timestamps

    def _scan(self, data: bytes, start: int, end: int) -> None:
        """Records the keys appended since the last scrape."""
        position = start
        while position < end:
            length = _unpack_int(data, position)[0]
            key_start = position + 4
            self.keys.append(data[key_start : key_start + length].decode())
            position = key_start + length + (8 - (length + 4) % 8)  # the key padded to 8
            self.indexes.append(position // 8)
            position += 16  # value and timestamp
        self.used = end

    def close(self) -> None:
        os.close(self.fd)


def _kind_of(path: str) -> FileKind:
    """As prometheus_client reads a file's name: gauges have a mode, and their pid label."""
    parts = os.path.basename(path).split("_")
    if parts[0] != "gauge":
        return parts[0], "", ""
    # Modes all and liveall keep one series per process, labelled with its pid.
    pid = parts[2].removesuffix(".db") if parts[1] in ("all", "liveall") else ""
    return "gauge", parts[1], pid


def _scrape_combine(kind: FileKind) -> Combine | None:
    """How the samples of one key in files of this kind combine; None: the last one stands."""
    typ, mode, _pid = kind
    if typ != "gauge":
        return _add
    return COMBINE.get(f"gauge_{mode.removeprefix('live')}")


def _combine(
    samples: dict[str, Sample],
    keys: list[str],
    values: list[float],
    timestamps: list[float],
    combine: Combine | None,
) -> None:
    if combine is _add:  # most samples: a loop of its own, timestamps unused
        for key, value in zip(keys, values, strict=True):
            samples[key] = (samples.get(key, (0.0, 0.0))[0] + value, 0.0)
        return
    for key, value, timestamp in zip(keys, values, timestamps, strict=True):
        known = samples.get(key)
        sample = (value, timestamp)
        samples[key] = combine(known, sample) if known and combine else sample


def retire_worker(pid: int, directory: str | None = None) -> None:
    """Everything the master does for the metrics of a worker that exited."""
    metrics_dir = Path(directory or os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if not metrics_dir.is_dir():
        return  # removed under the service (a /tmp cleaner): an error here would stop the master
    with _locked(metrics_dir, fcntl.LOCK_EX):
        multiprocess.mark_process_dead(pid, str(metrics_dir))
        _fold_dead_worker(pid, metrics_dir)


@contextmanager
def locked_for_scrape(directory: str) -> Iterator[None]:
    with _locked(Path(directory), fcntl.LOCK_SH):
        yield


def _fold_dead_worker(pid: int, directory: Path) -> None:
    dead_files = _foldable_files(pid, directory)
    for kind, dead_file in dead_files.items():
        _fold_into_archive(directory / f"{kind}_{ARCHIVE}.db", dead_file, COMBINE[kind])
    for dead_file in dead_files.values():
        dead_file.unlink()


@contextmanager
def _locked(directory: Path, operation: int) -> Iterator[None]:
    with (directory / LOCK_FILE).open("a") as lock_file:
        fcntl.flock(lock_file, operation)
        yield  # closing the file releases the lock, even if the process dies holding it


def _foldable_files(pid: int, directory: Path) -> dict[str, Path]:
    suffix = f"_{pid}.db"
    kinds = {path.name.removesuffix(suffix): path for path in directory.glob(f"*{suffix}")}
    return {kind: path for kind, path in kinds.items() if kind in COMBINE}


def _fold_into_archive(archive: Path, dead_file: Path, combine: Combine) -> None:
    samples = _read_samples(archive) if archive.exists() else {}
    for key, sample in _read_samples(dead_file).items():
        samples[key] = combine(samples[key], sample) if key in samples else sample
    _write_samples(archive, samples)  # in place: no scrape reads while the lock is held


def _read_samples(path: Path) -> dict[str, Sample]:
    return {
        key: (value, timestamp)
        for key, value, timestamp, _position in MmapedDict.read_all_values_from_file(str(path))
    }


def _write_samples(path: Path, samples: dict[str, Sample]) -> None:
    store = MmapedDict(str(path))
    try:
        for key, (value, timestamp) in samples.items():
            store.write_value(key, value, timestamp)
    finally:
        store.close()
