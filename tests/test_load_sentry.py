"""Sentry under load: one scrubbed event per error; a dead or hanging Sentry slows nothing."""

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from harness.envelopes import EnvelopeProcess
from harness.loopback import free_port

from .load import send_all
from .service import GunicornService

HERE = Path(__file__).resolve().parent
SECRETS = {
    "Authorization": "Bearer secret-authorization-value",
    "Cookie": "session=secret-cookie-value",
    "X-Api-Key": "secret-api-key-value",
    "X-Forwarded-For": "203.0.113.77",  # the client's address
}
QUERY_SECRET = "secret-query-token-value"


def test_one_scrubbed_event_per_unhandled_exception(baked, tmp_path, envelopes):
    sentry = envelopes()
    service = GunicornService(baked("all-defaults"), tmp_path, workers=3,
                              SENTRY_DSN=sentry.dsn, APP_ENV="staging").start()  # fmt: skip
    try:
        failures = send_all(service.url, [f"/api/fail?token={QUERY_SECRET}&page=1"] * 60,
                            headers=SECRETS)  # fmt: skip
        send_all(service.url, ["/api/items/1", "/"] * 100)
        assert [outcome.status for outcome in failures] == [500] * 60
        _wait_for_items(sentry, "event", count=60)
    finally:
        service.stop()  # a worker sends what it still holds (a duplicate, say) before it exits
    events = sentry.items("event")

    assert len(events) == 60
    assert {event["tags"]["request_id"] for event in events} == {o.request_id for o in failures}
    assert {event["release"] for event in events} == {"my-service@0.1.0"}
    assert {event["environment"] for event in events} == {"staging"}
    raw = sentry.items_file.read_text()
    for secret in (*SECRETS.values(), QUERY_SECRET):
        assert secret not in raw
    assert "REMOTE_ADDR" not in raw
    assert "ip_address" not in raw


@pytest.mark.parametrize("sentry_state", ["unreachable", "hanging"])
def test_a_broken_sentry_neither_slows_requests_nor_shutdown(baked, tmp_path, envelopes,
                                                              sentry_state):  # fmt: skip
    dsn = (
        f"http://public@127.0.0.1:{free_port()}/42" if sentry_state == "unreachable"
        else envelopes(hang=True).dsn
    )  # fmt: skip
    project = baked("all-defaults")
    without = _latencies(GunicornService(project, tmp_path / "off", workers=3, LOG_FILE=""))
    broken_service = GunicornService(project, tmp_path / sentry_state, workers=3, LOG_FILE="",
                                     SENTRY_DSN=dsn)  # fmt: skip
    with_broken = _latencies(broken_service)
    shutdown_seconds = broken_service.last_stop_seconds

    print(f"\nSentry {sentry_state}: median {statistics.median(with_broken) * 1000:.1f} ms, "
          f"p95 {_p95(with_broken) * 1000:.1f} ms; Sentry off: median "
          f"{statistics.median(without) * 1000:.1f} ms, p95 {_p95(without) * 1000:.1f} ms; "
          f"shutdown {shutdown_seconds:.1f} s")  # fmt: skip
    # Blocking on Sentry would cost seconds per request; these bounds only catch that.
    assert _p95(with_broken) < max(5 * _p95(without), 0.25)
    assert shutdown_seconds < 10


def _latencies(service: GunicornService) -> list[float]:
    (service.log_dir.parent).mkdir(parents=True, exist_ok=True)
    service.start()
    paths = ["/api/fail", "/api/items/1"] * 150

    def timed(path: str) -> float:
        started = time.perf_counter()
        requests.get(service.url + path, timeout=30)
        return time.perf_counter() - started

    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(timed, paths))
    finally:
        service.stop()


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def _wait_for_items(sentry: EnvelopeProcess, item_type: str, count: int, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = sentry.items(item_type)
        if len(items) >= count:
            return items
        time.sleep(0.2)
    raise AssertionError(f"{len(sentry.items(item_type))} of {count} {item_type}s arrived")
