"""Metrics stay exact under concurrent load, a killed worker and a restart."""

import os
import signal
import threading
import time

import pytest

from .load import send_all, status_counts
from .service import GunicornService

# A round of mixed traffic: two successes, a 404 and a 500 per round.
ROUND = ["/api/items/{n}", "/", "/api/items/{missing}", "/api/fail"]
EXPECTED_PER_ROUND = {"200": 2, "404": 1, "500": 1}
WORKERS = 3


def mixed_paths(rounds: int) -> list[str]:
    return [path.format(n=n % 1000, missing=1001 + n) for n in range(rounds) for path in ROUND]


def request_totals(service) -> dict[str, float]:
    return {status: service.metric("flask_http_request_total", status=status)
            for status in EXPECTED_PER_ROUND}  # fmt: skip


def histogram_counts(service) -> dict[str, float]:
    return {status: service.metric("flask_http_request_duration_seconds_count", status=status)
            for status in EXPECTED_PER_ROUND}  # fmt: skip


@pytest.fixture
def service(baked, tmp_path):
    server = GunicornService(
        baked("all-defaults"), tmp_path, workers=WORKERS,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), LOG_FILE="",
    ).start()  # fmt: skip
    yield server
    server.stop()


def test_counts_are_exact_per_status_after_thousands_of_requests(service):
    rounds = 600  # 2,400 requests
    outcomes = send_all(service.url, mixed_paths(rounds))
    expected = {status: count * rounds for status, count in EXPECTED_PER_ROUND.items()}
    assert status_counts(outcomes) == expected
    assert request_totals(service) == expected
    assert histogram_counts(service) == expected
    assert service.metric("flask_http_request_duration_seconds_bucket", le="+Inf") == 4 * rounds


def test_counts_survive_a_worker_killed_mid_load_and_restart_from_zero(service):
    before_kill = send_all(service.url, mixed_paths(150))
    assert sum(request_totals(service).values()) == len(before_kill)

    victim = service.worker_pids()[0]
    during = []
    load = threading.Thread(target=lambda: during.extend(send_all(service.url, mixed_paths(300))))
    load.start()
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    load.join(timeout=120)
    assert not load.is_alive()
    _wait_for_workers(service, WORKERS, replaced=victim)

    answered = sum(outcome.status is not None for outcome in during)
    failed = len(during) - answered
    total = sum(request_totals(service).values())
    # A request the killed worker counted but could not answer is the only slack.
    assert len(before_kill) + answered <= total <= len(before_kill) + answered + failed
    assert failed <= 1

    after = send_all(service.url, mixed_paths(150))
    assert sum(request_totals(service).values()) == total + len(after)

    service.stop()
    service.start()  # same PROMETHEUS_MULTIPROC_DIR: old files must not carry over
    assert request_totals(service) == dict.fromkeys(EXPECTED_PER_ROUND, 0.0)
    send_all(service.url, mixed_paths(10))
    assert request_totals(service) == {status: count * 10.0
                                       for status, count in EXPECTED_PER_ROUND.items()}  # fmt: skip


def test_label_cardinality_stays_bounded_for_thousands_of_urls(service):
    known = [f"/api/items/{n}" for n in range(1500)]
    unknown_ids = [f"/api/items/{n}" for n in range(5000, 6000)]
    scanners = [f"/{prefix}/{n}.php" for n in range(250) for prefix in ("wp-admin", "cgi-bin")]
    outcomes = send_all(service.url, known + unknown_ids + scanners)
    assert status_counts(outcomes) == {"200": 1001, "404": 1999}  # ids 0 to 1000 exist

    scrape = service.get("/metrics").text
    series = [line for line in scrape.splitlines()
              if line.startswith("flask_http_request_duration_seconds_count")]  # fmt: skip
    assert len(series) == 3  # the items route with 200 and 404, and every unknown URL
    assert len(scrape.encode()) < 64_000


def _wait_for_workers(service, count: int, replaced: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = service.worker_pids()
        if len(pids) == count and replaced not in pids:
            return
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not replace worker {replaced} within {timeout} s")
