"""The multiprocess metrics directory under gunicorn: bounded through hundreds of worker
replacements with totals exact, and removed on exit when the service made it."""

import threading
from collections import Counter
from itertools import pairwise

import pytest

from .load import send_all, status_counts
from .service import GunicornService
from .test_load_metrics import EXPECTED_PER_ROUND, histogram_counts, mixed_paths, request_totals

WORKERS = 3
MAX_REQUESTS = 5  # a worker is replaced after serving this many requests
ROUNDS = 375  # 1,500 requests: about 300 replacements


@pytest.fixture
def churning_service(baked, tmp_path):
    server = GunicornService(
        baked("all-defaults"), tmp_path, workers=WORKERS,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), LOG_FILE="",
        GUNICORN_CMD_ARGS=f"--max-requests {MAX_REQUESTS}",
    ).start()  # fmt: skip
    yield server
    server.stop()


class DirectoryWatch:
    """Lists the metrics directory over and over, keeping the largest count of files."""

    def __init__(self, directory):
        self.directory = directory
        self.most_files = 0
        self.kinds: set[str] = set()  # file names less their pid: counter, gauge_max, ...

    def look(self) -> None:
        names = [path.name for path in self.directory.glob("*.db")]
        self.most_files = max(self.most_files, len(names))
        self.kinds.update(name.rpartition("_")[0] for name in names)


class ScrapeWatch:
    """Scrapes over and over; each request total must be at least the one before."""

    def __init__(self, service):
        self.service = service
        self.totals: list[float] = []
        self.failures: list[int] = []

    def look(self) -> None:
        response = self.service.get("/metrics")
        if response.status_code != 200:
            self.failures.append(response.status_code)
            return
        self.totals.append(sum(_request_totals(response.text).values()))

    def decreases(self) -> list[tuple[float, float]]:
        return [(a, b) for a, b in pairwise(self.totals) if b < a]


def _request_totals(scrape: str) -> Counter:
    totals = Counter()
    for line in scrape.splitlines():
        if line.startswith("flask_http_request_total{"):
            status = line.partition('status="')[2].partition('"')[0]
            totals[status] += float(line.rpartition(" ")[2])
    return totals


def watch_while(load: threading.Thread, *watches) -> None:
    while load.is_alive():
        for watch in watches:
            watch.look()


@pytest.mark.long
def test_files_follow_the_live_workers_and_totals_stay_exact_through_replacements(
    churning_service, tmp_path
):
    service = churning_service
    outcomes = []
    load = threading.Thread(
        target=lambda: outcomes.extend(send_all(service.url, mixed_paths(ROUNDS), concurrency=8))
    )
    files = DirectoryWatch(tmp_path / "metrics")
    scrapes = ScrapeWatch(service)
    load.start()
    watch_while(load, files, scrapes)
    files.look()

    replacements = service.output.read_text().count("Booting worker with pid") - WORKERS
    assert replacements >= ROUNDS * len(EXPECTED_PER_ROUND) // MAX_REQUESTS // 2
    expected = {status: count * ROUNDS for status, count in EXPECTED_PER_ROUND.items()}
    assert status_counts(outcomes) == expected
    assert request_totals(service) == expected
    assert histogram_counts(service) == expected
    # Scrapes during the folds: never failed, never counted a dead worker twice or not at all.
    assert scrapes.failures == []
    assert len(scrapes.totals) > 10
    assert scrapes.decreases() == []
    assert scrapes.totals[-1] <= len(outcomes)
    # A file of each kind for each live worker and for one being replaced, and the archives.
    assert files.most_files <= len(files.kinds) * (WORKERS + 1)
    assert len(list(files.directory.glob("*.db"))) <= len(files.kinds) * (WORKERS + 1)


def test_a_directory_the_service_made_is_removed_on_exit_even_after_a_reload(baked, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    service = GunicornService(
        baked("all-defaults"), tmp_path, workers=2,
        PROMETHEUS_MULTIPROC_DIR="", TMPDIR=str(temporary), LOG_FILE="",
    ).start()  # fmt: skip
    try:
        made = list(temporary.glob("metrics-*"))
        assert len(made) == 1 and any(made[0].glob("*.db"))
        service.wait_for_workers(2)  # settled: every worker has booted before the HUP
        service.reload()  # gunicorn.conf.py runs again
        send_all(service.url, mixed_paths(5))
    finally:
        service.stop()
    assert list(temporary.iterdir()) == [], "neither the metrics nor the log relay folder stays"


def test_a_directory_given_by_the_operator_is_kept_on_exit(baked, tmp_path):
    given = tmp_path / "metrics"
    service = GunicornService(
        baked("all-defaults"), tmp_path, workers=2, PROMETHEUS_MULTIPROC_DIR=str(given),
        LOG_FILE="",
    ).start()  # fmt: skip
    try:
        send_all(service.url, mixed_paths(5))
    finally:
        service.stop()
    assert given.is_dir() and any(given.glob("*.db"))
