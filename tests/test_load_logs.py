"""Log lines stay whole, unique and complete under load, rotation, retention and a killed worker."""

import gzip
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .load import send_all
from .service import GunicornService

PATHS = ["/api/items/{n}", "/", "/api/fail", "/api/items/{missing}"]


def mixed_paths(rounds: int) -> list[str]:
    return [path.format(n=n % 1000, missing=2000 + n) for n in range(rounds) for path in PATHS]


def read_lines(log_dir: Path) -> list[str]:
    lines = []
    for path in log_dir.iterdir():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as log_file:
            lines.extend(log_file.read().splitlines())
    return lines


def access_ids(lines: list[str]) -> Counter:
    """Request ids of gunicorn's access lines; every line must be one whole JSON object."""
    records = [json.loads(line) for line in lines]
    return Counter(r["http.request.id"] for r in records if r["log.logger"] == "gunicorn.access")


def served(baked, tmp_path, **settings):
    return GunicornService(baked("all-defaults"), tmp_path, workers=3, **settings).start()


def test_every_line_once_across_several_rotations(baked, tmp_path):
    service = served(baked, tmp_path, LOG_ROTATION="200 KB", LOG_RETENTION="1000",
                     LOG_COMPRESSION="gz")  # fmt: skip
    outcomes = send_all(service.url, mixed_paths(600))
    service.stop()

    files = list(service.log_dir.iterdir())
    assert sum(path.suffix == ".gz" for path in files) >= 4, "expected several rotations"
    lines = read_lines(service.log_dir)
    ids = access_ids(lines)
    assert all(outcome.status is not None for outcome in outcomes)
    assert {outcome.request_id for outcome in outcomes} <= ids.keys()
    assert max(ids.values()) == 1
    item_lines = [line for line in lines if json.loads(line)["message"].startswith("item ")]
    assert len(item_lines) == sum(o.status == 200 and o.path != "/" for o in outcomes)


def test_count_retention_drops_only_the_oldest_files(baked, tmp_path):
    service = served(baked, tmp_path, LOG_ROTATION="100 KB", LOG_RETENTION="3",
                     LOG_COMPRESSION="none")  # fmt: skip
    sent_at = {}
    for batch in range(6):
        for outcome in send_all(service.url, mixed_paths(100)):
            sent_at[outcome.request_id] = batch
    service.stop()

    files = list(service.log_dir.iterdir())
    assert len(files) == 4, "three rotated files and the current one"
    ids = access_ids(read_lines(service.log_dir))
    assert max(ids.values()) == 1
    kept_batches = sorted({sent_at[request_id] for request_id in ids if request_id in sent_at})
    # What retention dropped is a prefix: every batch after the oldest kept one is complete.
    for batch in kept_batches[1:]:
        batch_ids = {request_id for request_id, b in sent_at.items() if b == batch}
        assert batch_ids <= ids.keys(), f"lines of batch {batch} are missing"
    assert kept_batches[-1] == 5


def test_age_retention_keeps_only_recent_files(baked, tmp_path):
    retention = 2.0
    service = served(baked, tmp_path, LOG_ROTATION="50 KB", LOG_RETENTION="2 seconds",
                     LOG_COMPRESSION="none")  # fmt: skip
    early = send_all(service.url, mixed_paths(300))  # several rotations
    waited_until = wait_until_files_are_older_than(service.log_dir, retention)
    late = rotate_with_long_lines(service, after=waited_until)  # this rotation applies retention
    service.stop()

    rotated = [path for path in service.log_dir.iterdir() if path.name != "service.log"]
    newest = max(path.stat().st_mtime for path in rotated)
    ages = [newest - path.stat().st_mtime for path in rotated]
    assert max(ages) <= retention + 1.0, f"a rotated file older than the retention was kept: {ages}"
    early_ids = {outcome.request_id for outcome in early}
    files_of_early_lines_only = [
        path for path in rotated
        if set(access_ids(path.read_text().splitlines())) <= early_ids
    ]  # fmt: skip
    assert files_of_early_lines_only == []
    assert {outcome.request_id for outcome in late} <= access_ids(
        read_lines(service.log_dir)
    ).keys()


def wait_until_files_are_older_than(log_dir: Path, seconds: float) -> float:
    """Wait until every log file was last written more than `seconds` ago; returns the time."""
    deadline = time.monotonic() + 10 * seconds
    while time.monotonic() < deadline:
        newest = max(modified_at(path) for path in log_dir.iterdir())
        if time.time() - newest > seconds:
            return time.time()
        time.sleep(0.1)
    raise AssertionError(f"log files were still being written {10 * seconds} s after the load")


def rotate_with_long_lines(service: GunicornService, after: float) -> list:
    """A few requests, one at a time, until the log rotates: each access line is about 6 KB
    (its user agent), so the rotation comes after a handful of requests, however slow the
    machine, and long before these lines could be older than the retention."""
    sent = []
    for _ in range(100):
        sent.extend(send_all(service.url, ["/"], headers={"User-Agent": "x" * 6000}))
        if any(modified_at(path) > after for path in service.log_dir.iterdir()
               if path.name != "service.log"):  # fmt: skip
            return sent
    raise AssertionError("100 requests of long lines did not rotate the log")


def modified_at(path: Path) -> float:
    """0 for a file that retention removed since the folder was listed."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@pytest.mark.parametrize("kills", [3])
def test_a_killed_worker_loses_no_line_of_a_completed_request(baked, tmp_path, kills):
    service = served(baked, tmp_path, LOG_ROTATION="500 KB", LOG_RETENTION="1000")
    outcomes = []
    load = threading.Thread(target=lambda: outcomes.extend(send_all(service.url, mixed_paths(900))))
    load.start()
    killed = []
    for _ in range(kills):
        time.sleep(0.7)
        victim = service.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
    load.join(timeout=120)
    assert not load.is_alive(), "load did not finish: logging may be blocked"
    after = send_all(service.url, mixed_paths(50))  # the service still logs after the kills
    service.stop()

    ids = access_ids(read_lines(service.log_dir))
    assert max(ids.values()) == 1
    completed = [o.request_id for o in outcomes + after if o.status is not None]
    missing = [request_id for request_id in completed if request_id not in ids]
    # Only a request answered in the instant before its worker died may miss its line.
    assert len(missing) <= kills
    assert all(o.request_id in ids for o in after)
