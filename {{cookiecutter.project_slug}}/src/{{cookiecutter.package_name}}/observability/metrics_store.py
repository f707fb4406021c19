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

Gauges in mode `all` (prometheus_client's default) export one series per process, the dead
ones included, labelled with its pid: one archive cannot keep those apart, so their files
stay. The `live*` modes need no folding: `mark_process_dead` deletes their files.
"""

import fcntl
import glob
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import Metric, multiprocess
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

LOCK_FILE = "fold.lock"  # not *.db: prometheus_client reads every .db file as samples
ARCHIVE = "archive"  # in place of the pid: a gauge's file name gives its `pid` label

Sample = tuple[float, float]  # value, timestamp

_scraping = threading.Lock()
os.register_at_fork(
    before=_scraping.acquire, after_in_parent=_scraping.release, after_in_child=_scraping.release
)
Combine = Callable[[Sample, Sample], Sample]


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
    """Reads every file of the directory under the shared lock."""

    def collect(self) -> Iterable[Metric]:
        with _scraping, locked_for_scrape(self._path):
            paths = glob.glob(os.path.join(self._path, "*.db"))
            # A starting worker creates its file empty, then sizes it: nothing to read yet.
            metrics: Iterable[Metric] = self.merge([p for p in paths if os.path.getsize(p)])
            return metrics  # merge() has no types of its own


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
