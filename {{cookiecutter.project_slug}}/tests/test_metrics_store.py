"""The multiprocess metrics directory: dead workers' files folded into archives, totals kept."""

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from {{ cookiecutter.package_name }}.observability import (
    metrics_exposition,
    metrics_store,
)

from .conftest import PROJECT_DIR, get, wait_until
from .test_metrics import sample

# A worker of its own: prometheus_client in multiprocess mode, one sample of each kind.
WRITER = """
import os, sys
from prometheus_client import Counter, Gauge, Histogram

n = int(sys.argv[1])
Counter("jobs", "Jobs done", ["queue"]).labels("mail").inc(n)
Histogram("job_seconds", "Job time", buckets=(1, 3)).observe(n)
for mode in ("sum", "min", "max", "mostrecent"):
    Gauge(f"depth_{mode}", "Queue depth", multiprocess_mode=mode).set(n)
print(os.getpid())
"""


# Every kind of metric and every gauge mode, labelled series shared by all workers or not.
EVERY_KIND = """
import os, sys
from prometheus_client import Counter, Gauge, Histogram, Summary

n = int(sys.argv[1])
jobs = Counter("jobs", "Jobs done", ["queue"])
jobs.labels("mail").inc(n)
jobs.labels(f"queue{n}").inc()
Histogram("job_seconds", "Job time", ["queue"], buckets=(1, 3)).labels("mail").observe(n)
Summary("job_bytes", "Job size").observe(10 * n)
for mode in Gauge._MULTIPROC_MODES:
    Gauge(f"depth_{mode}", "Queue depth", ["queue"], multiprocess_mode=mode).labels("mail").set(n)
print(os.getpid())
"""

# A counter and a histogram whose help text changes from one release to the next.
HELP_BY_RELEASE = """
import os, sys
from prometheus_client import Counter, Histogram

n = int(sys.argv[1])
Counter("jobs", f"Jobs done (release {n})", ["queue"]).labels("mail").inc(n)
Histogram("job_seconds", f"Job time (release {n})", buckets=(1, 3)).observe(n)
print(os.getpid())
"""


def run_worker(directory: Path, n: int, script: str = WRITER) -> int:
    finished = subprocess.run(
        [sys.executable, "-c", script, str(n)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return int(finished.stdout)


# The plain text format (curl, a browser) and OpenMetrics (Prometheus).
ACCEPT_HEADERS = [None, "application/openmetrics-text; version=1.0.0"]


def scrape_directory(directory: Path, accept: str | None = None) -> list[str]:
    """prometheus_client's own scrape of the directory."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    encode, _content_type = choose_encoder(accept or "")
    return sorted(encode(registry).decode().splitlines())


def scrape_with_the_store(directory: Path, accept: str | None = None) -> list[str]:
    """The service's scrape: the store's collector, written by the cached formats."""
    registry = CollectorRegistry()
    metrics_store.LockedMultiProcessCollector(registry, path=str(directory))
    text, _content_type = metrics_exposition.scrape(registry, accept, None)
    return sorted(text.decode().splitlines())


def assert_scrapes_as_prometheus_client(directory: Path) -> None:
    for accept in ACCEPT_HEADERS:
        expected = scrape_directory(directory, accept)
        assert scrape_with_the_store(directory, accept) == expected
        assert scrape_with_the_store(directory, accept) == expected  # from what the first kept


def write_sample(path: Path, key: str, value: float) -> None:
    """As a worker does: a new key is appended to its file, a known one changes in place."""
    store = MmapedDict(str(path))
    try:
        store.write_value(key, value, time.time())
    finally:
        store.close()


def counter_key(queue: str) -> str:
    return mmap_key("jobs", "jobs_total", ["queue"], [queue], "Jobs done")


def write_counters(path: Path, **values: float) -> Path:
    """One counter sample per queue, in the order given."""
    for queue, value in values.items():
        write_sample(path, counter_key(queue), value)
    return path


def files_of(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.db")}


def someone_waits_for(lock_file: Path) -> bool:
    """Whether a process waits for a lock on this file: Linux lists waiters with `->`."""
    inode = f":{lock_file.stat().st_ino}"
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and any(f.endswith(inode) for f in line.split()) for line in lines)


needs_proc_locks = pytest.mark.skipif(
    not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks"
)


def test_folding_dead_workers_keeps_every_total_and_removes_their_files(tmp_path):
    first, second, live = (run_worker(tmp_path, n) for n in (2, 5, 3))
    before = scrape_directory(tmp_path)
    assert 'jobs_total{queue="mail"} 10.0' in before
    assert "depth_min 2.0" in before and "depth_mostrecent 3.0" in before

    metrics_store.retire_worker(first, str(tmp_path))
    metrics_store.retire_worker(second, str(tmp_path))

    assert scrape_directory(tmp_path) == before
    kinds = {"counter", "histogram", "gauge_sum", "gauge_min", "gauge_max", "gauge_mostrecent"}
    archives = {f"{kind}_archive.db" for kind in kinds}
    assert files_of(tmp_path) == archives | {f"{kind}_{live}.db" for kind in kinds}


def test_a_scrape_skips_a_file_that_a_starting_worker_has_not_sized_yet(tmp_path):
    run_worker(tmp_path, 4)
    before = scrape_directory(tmp_path)
    (tmp_path / "counter_999999.db").touch()  # as MmapedDict opens it, before it truncates
    registry = CollectorRegistry()
    metrics_store.LockedMultiProcessCollector(registry, path=str(tmp_path))
    assert sorted(generate_latest(registry).decode().splitlines()) == before


def test_a_scrape_adds_up_every_kind_as_prometheus_client_does(tmp_path):
    for n in (2, 5, 3):
        run_worker(tmp_path, n, EVERY_KIND)
    assert_scrapes_as_prometheus_client(tmp_path)
    scraped = scrape_with_the_store(tmp_path)
    assert 'job_seconds_bucket{le="3.0",queue="mail"} 2.0' in scraped  # 2 and 3, not 5
    assert 'depth_livemin{queue="mail"} 2.0' in scraped


def test_a_series_whose_help_changed_in_a_release_is_added_up_as_one(tmp_path):
    """A reload (HUP) brings workers that write the same series under a new help text, while
    the archive and the old workers' files hold the old one: one series, added up."""
    for n in (2, 5, 3):
        run_worker(tmp_path, n, HELP_BY_RELEASE)
    assert_scrapes_as_prometheus_client(tmp_path)
    scraped = scrape_with_the_store(tmp_path)
    assert 'job_seconds_bucket{le="3.0"} 2.0' in scraped
    assert 'job_seconds_bucket{le="+Inf"} 3.0' in scraped


def test_a_scrape_reads_the_keys_and_values_written_since_the_last(tmp_path):
    worker = run_worker(tmp_path, 2, EVERY_KIND)
    run_worker(tmp_path, 5, EVERY_KIND)
    assert_scrapes_as_prometheus_client(tmp_path)
    counters = tmp_path / f"counter_{worker}.db"
    write_sample(counters, counter_key("mail"), 40)
    write_sample(counters, counter_key("sms"), 7)  # a series new to this file
    write_sample(tmp_path / f"gauge_all_{worker}.db", mmap_key("new", "new", [], [], "New"), 1)
    assert_scrapes_as_prometheus_client(tmp_path)
    assert 'jobs_total{queue="sms"} 7.0' in scrape_with_the_store(tmp_path)


def test_a_scrape_after_a_fold_or_a_deleted_file_reads_what_is_there_now(tmp_path):
    first, second, _live = (run_worker(tmp_path, n, EVERY_KIND) for n in (2, 5, 3))
    assert_scrapes_as_prometheus_client(tmp_path)
    metrics_store.retire_worker(first, str(tmp_path))  # the archives are made
    assert_scrapes_as_prometheus_client(tmp_path)
    metrics_store.retire_worker(second, str(tmp_path))  # and grow in place
    assert_scrapes_as_prometheus_client(tmp_path)
    (tmp_path / f"gauge_all_{first}.db").unlink()
    assert_scrapes_as_prometheus_client(tmp_path)


def test_a_file_made_anew_under_the_same_name_is_read_afresh(tmp_path):
    """A worker's files deleted, then a new worker given its pid: keys in another order."""
    counters = write_counters(tmp_path / "counter_4242.db", a=1, b=2, c=3)
    assert_scrapes_as_prometheus_client(tmp_path)
    counters.unlink()
    write_counters(counters, c=30, b=20, a=10, d=40)
    assert_scrapes_as_prometheus_client(tmp_path)


def test_a_file_written_anew_in_place_is_read_afresh(tmp_path):
    """prometheus_client never does it, but a file's used size going down says its keys moved."""
    counters = write_counters(tmp_path / "counter_4242.db", a=1, b=2, c=3)
    assert_scrapes_as_prometheus_client(tmp_path)
    with counters.open("r+b") as same_inode:
        same_inode.truncate(0)
    write_counters(counters, c=30)
    assert_scrapes_as_prometheus_client(tmp_path)


@needs_proc_locks
def test_a_fold_waits_for_a_scrape_in_progress(tmp_path):
    dead = run_worker(tmp_path, 1)
    dead_files = files_of(tmp_path)
    lock_file = tmp_path / metrics_store.LOCK_FILE
    with metrics_store.locked_for_scrape(str(tmp_path)):
        fold = threading.Thread(target=metrics_store.retire_worker, args=(dead, str(tmp_path)))
        fold.start()
        wait_until(lambda: someone_waits_for(lock_file) or not fold.is_alive(), "the fold", 10)
        assert fold.is_alive(), "the fold went ahead during a scrape"
        assert files_of(tmp_path) == dead_files
    fold.join(timeout=10)
    assert not any(name.endswith(f"_{dead}.db") for name in files_of(tmp_path))


# The gunicorn master with METRICS_PORT: a scrape in a thread, a worker forked meanwhile.
FORK_DURING_A_SCRAPE = """
import fcntl, os, sys, threading
from {module} import metrics_store

directory = sys.argv[1]
collector = metrics_store.LockedMultiProcessCollector(None, path=directory)
reading, finish = threading.Event(), threading.Event()

def slow_merge(files, paths):
    reading.set()
    finish.wait()
    return []

metrics_store._SampleFiles.merge = slow_merge
scrape = threading.Thread(target=collector.collect)
scrape.start()
reading.wait()
# Runs first of the fork handlers: the scrape can end only once the fork has begun.
os.register_at_fork(before=finish.set)
release, child_may_exit = os.pipe()
child = os.fork()
if child == 0:
    os.read(release, 1)
    os._exit(0)
scrape.join()
with open(os.path.join(directory, metrics_store.LOCK_FILE), "a") as lock:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the master's next fold takes
        print("free")
    except BlockingIOError:
        print("held by the child")
os.write(child_may_exit, b"x")
os.waitpid(child, 0)
"""


def test_a_worker_forked_during_a_scrape_holds_no_lock(tmp_path):
    script = FORK_DURING_A_SCRAPE.format(module=metrics_store.__name__.rpartition(".")[0])
    finished = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(PROJECT_DIR / "src")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.stdout == "free\n", finished.stderr


@needs_proc_locks
def test_a_scrape_waits_for_a_fold_in_progress(gunicorn, tmp_path):
    directory = tmp_path / "metrics"
    server = gunicorn(workers=1, PROMETHEUS_MULTIPROC_DIR=str(directory))
    answers = []
    lock_file = directory / metrics_store.LOCK_FILE
    with lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the master holds it while it folds
        scrape = threading.Thread(target=lambda: answers.append(get(f"{server.url}/metrics")))
        scrape.start()
        wait_until(lambda: someone_waits_for(lock_file) or answers, "the scrape", 10)
        assert answers == [], "the scrape went ahead during a fold"
    scrape.join(timeout=10)
    assert answers[0][0] == 200


def test_recycled_workers_leave_exact_totals_and_no_files_behind(gunicorn, tmp_path):
    directory = tmp_path / "metrics"
    server = gunicorn(
        workers=2, PROMETHEUS_MULTIPROC_DIR=str(directory), GUNICORN_CMD_ARGS="--max-requests 3"
    )
    for item_id in range(24):  # eight workers or more, each replaced after 3 requests
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    text = get(f"{server.url}/metrics")[2].decode()
    assert sample(text, "flask_http_request_total", status="200") == 24
    assert sample(text, "flask_http_request_duration_seconds_count", status="200") == 24
    pids = {name.rpartition("_")[2] for name in files_of(directory)} - {"archive.db"}
    assert len(pids) <= 2  # the live workers' files; the dead ones' are in the archives
    assert files_of(directory) >= {"counter_archive.db", "histogram_archive.db"}


# (value, timestamp) pairs where the sample to keep is not the one the other field would pick:
# a fold that compares timestamps for min/max, or values for mostrecent, keeps the wrong one.
@pytest.mark.parametrize(
    ("kind", "one", "other", "kept"),
    [
        ("gauge_min", (2.0, 200.0), (5.0, 100.0), (2.0, 200.0)),  # the lower one is later
        ("gauge_max", (5.0, 100.0), (2.0, 200.0), (5.0, 100.0)),  # the higher one is earlier
        ("gauge_mostrecent", (2.0, 200.0), (5.0, 100.0), (2.0, 200.0)),  # the later one is lower
    ],
)
def test_a_gauge_fold_keeps_the_sample_a_scrape_would_show(kind, one, other, kept):
    combine = metrics_store.COMBINE[kind]
    assert combine(one, other) == kept
    assert combine(other, one) == kept  # archived or dead, either way round
