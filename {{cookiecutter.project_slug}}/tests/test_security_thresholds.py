"""Per-client thresholds: counted over every gunicorn worker, in memory that a flood of
addresses cannot grow, by a detector that nothing a client sends can stop."""

import os
import signal
import socket
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask, abort

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import (
    security_thresholds as thresholds,
)

from .conftest import get, wait_until
from .ecs import written_records

SCAN = thresholds.Threshold("malicious_excess_404", "404 answers", limit=5, window_seconds=60)
# The service with 404 answers slow enough that concurrent requests keep every worker busy:
# gunicorn would otherwise let one idle worker take a quick scan whole.
SLOW_404_APP = "tests.test_security_thresholds:create_app_with_slow_404s()"
SLOW_404_SECONDS = 0.1


def create_app_with_slow_404s() -> Flask:
    app = create_app()

    @app.get("/scan/<int:attempt>")
    def scan(attempt: int):
        time.sleep(SLOW_404_SECONDS)
        abort(404)

    return app


def counts_at(times: list[float]) -> list[int | None]:
    """What one client's events at these times report: the count at each crossing."""
    counts = thresholds.ClientCounts(SCAN, tracked_clients=100)
    crossings = [counts.add("192.0.2.1", now) for now in times]
    return [crossing.count if crossing else None for crossing in crossings]


def test_the_limit_within_the_window_is_a_crossing():
    assert counts_at([0, 1, 2, 3, 4]) == [None, None, None, None, 5]


def test_fewer_than_the_limit_are_none():
    assert counts_at([0, 10, 20, 30]) == [None] * 4


def test_events_spread_wider_than_the_window_are_none():
    assert counts_at([0, 30, 60, 90, 120, 150, 180, 210]) == [None] * 8


def test_a_crossing_is_reported_once_a_window_while_it_goes_on():
    reported = counts_at([n * 2.0 for n in range(60)])  # one event every 2 s, for 2 minutes
    crossings = [n for n, count in enumerate(reported) if count]
    assert crossings[0] == 4
    assert [n * 2.0 for n in crossings] == [8.0, 68.0]


def test_a_client_quiet_for_two_whole_windows_starts_from_zero():
    # Four events, then none until two windows later, to the second: the four are forgotten.
    assert counts_at([0, 1, 2, 3, 120, 121, 122, 123, 124]) == [None] * 8 + [5]


def test_straddling_the_edge_of_two_windows_is_counted_whole():
    # The first event starts a fixed window at 0; then three events at its end and two at
    # the start of the next: five within the last 60 s.
    assert counts_at([0, 56, 57, 58, 61, 62])[-2:] == [None, 6]


def test_clients_are_counted_apart():
    counts = thresholds.ClientCounts(SCAN, tracked_clients=100)
    for now in range(4):
        assert counts.add("192.0.2.1", now) is None
        assert counts.add("192.0.2.2", now) is None
    assert counts.add("192.0.2.1", 4).client == "192.0.2.1"


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not an address", "unknown"),
        ("", "unknown"),
        ("x" * 10_000, "unknown"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_network(address, key):
    assert thresholds.client_key(address) == key


def test_hopping_addresses_inside_one_ipv6_network_does_not_hide_a_client():
    crossings = []
    detector = thresholds.ThresholdDetector({"http_404": SCAN}, 100, crossings.append)
    for host in range(1, 6):
        detector.observe("http_404", f"2001:db8:1:2::{host:x}")
    [crossing] = crossings
    assert crossing.client == "2001:db8:1:2::/64"


def test_memory_stays_bounded_under_a_flood_of_distinct_addresses():
    tracked = 10_000
    counts = thresholds.ClientCounts(SCAN, tracked_clients=tracked)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(100_000):
        counts.add(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", float(n))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(counts) == tracked
    # About 250 bytes a client (2.5 MB measured): 100,000 addresses keep the 10,000 latest.
    assert grown < 4 * 1024 * 1024, f"{grown} bytes for {tracked} clients"


def test_a_new_client_is_counted_once_every_place_is_taken():
    counts = thresholds.ClientCounts(SCAN, tracked_clients=100)
    for other in range(100):
        counts.add(f"10.0.0.{other}", 0)
    reported = [counts.add("192.0.2.1", now) for now in range(5)]
    assert [crossing is not None for crossing in reported] == [False] * 4 + [True]


def test_the_most_recent_client_is_kept_when_the_oldest_are_forgotten():
    counts = thresholds.ClientCounts(SCAN, tracked_clients=100)
    for now in range(4):
        counts.add("192.0.2.1", now)
        for other in range(99):  # the attacker stays among the 100 most recently seen
            counts.add(f"10.0.0.{other}", now)
    assert counts.add("192.0.2.1", 4) is not None


@pytest.fixture
def listener():
    crossings = []
    detector = thresholds.ThresholdDetector({"http_404": SCAN}, 100, crossings.append)
    listener = thresholds.ObservationListener(detector)
    yield listener, crossings
    listener.stop()


def test_no_datagram_stops_the_masters_detector(listener):
    listener, crossings = listener
    garbage = [b"\xff\xfe\x00", b"http_404", b"http_404 ", b" 192.0.2.9", b"x" * 5000,
               b"http_404 192.0.2.9 extra", b"other_kind 192.0.2.9", b"\x00" * 100]  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.settimeout(5)  # a detector that died reads nothing: fail, do not hang
        for datagram in garbage:
            sender.sendto(datagram, listener.address)
        for _ in range(SCAN.limit):
            sender.sendto(b"http_404 192.0.2.1", listener.address)
        [crossing] = wait_until(lambda: crossings, "crossing")
    assert crossing.client == "192.0.2.1"


def test_a_worker_never_waits_on_a_master_that_does_not_read():
    with tempfile.TemporaryDirectory() as folder:
        address = os.path.join(folder, "observations.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as master:
            master.bind(address)  # and never reads: its queue fills
            sender = thresholds.ObservationSender(address)
            flood = threading.Thread(
                target=lambda: [sender.observe("http_404", "192.0.2.1") for _ in range(1000)],
                daemon=True,
            )
            flood.start()
            flood.join(timeout=60)  # a bound for a stuck test only: it takes milliseconds
            assert not flood.is_alive(), "a full queue made the worker wait"
        sender.observe("http_404", "192.0.2.1")  # nor does a master that is gone stop it


def test_a_scan_spread_over_three_workers_is_detected_as_on_one(gunicorn, tmp_path):
    """Each address that the trusted proxy appends is one client: one scans past the limit
    over three workers, the other stops one short, and a third is framed in vain."""
    limit = 30
    server = gunicorn(
        workers=3, app=SLOW_404_APP, SECURITY_404_LIMIT=str(limit), TRUSTED_PROXY_HOPS="1"
    )
    framed, scanner, careful = "198.51.100.99", "203.0.113.1", "203.0.113.2"

    def scan(client: str, attempt: int) -> int:
        # The client wrote the framed address itself; the proxy appended the one it saw.
        headers = {"X-Forwarded-For": f"{framed}, {client}"}
        return get(f"{server.url}/scan/{attempt}", headers)[0]

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(scan, [careful] * (limit - 1), range(limit - 1)))
        statuses += pool.map(scan, [scanner] * limit, range(limit))
    assert set(statuses) == {404}

    log_file = tmp_path / "logs" / "service.log"

    def alerts() -> list[dict]:
        records = written_records(log_file)
        return [record for record in records if record.get("event.kind") == "alert"]

    # The scanner's last observation reached the master after all the careful client's.
    [alert] = wait_until(alerts, "malicious_excess_404")
    assert alert["event.action"] == "malicious_excess_404"
    assert alert["client.ip"] == scanner
    assert alert["event.reason"] == f"{limit} 404 answers within 60 s"
    assert alert["process.pid"] == server.process.pid, "counted by the master"

    def scanners_requests() -> list[dict]:
        return [
            record
            for record in written_records(log_file)
            if record.get("log.logger") == "gunicorn.access" and record["client.address"] == scanner
        ]

    served = wait_until(lambda: len(scanners_requests()) == limit and scanners_requests(), "access")
    served_by = {record["process.pid"] for record in served}
    assert len(served_by) == 3, "the scan reached every worker, each below the limit"


def workers_of(master: int) -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_the_workers_of_a_reload_report_to_the_same_detector(gunicorn, tmp_path):
    """A HUP replaces the workers; the master's counts go on, over old and new workers."""
    server = gunicorn(workers=2, SECURITY_404_LIMIT="4")
    master = server.process.pid
    old_workers = wait_until(lambda: len(workers_of(master)) == 2 and workers_of(master), "workers")
    for attempt in range(2):
        assert get(f"{server.url}/missing/{attempt}")[0] == 404
    os.kill(master, signal.SIGHUP)
    wait_until(lambda: len(workers_of(master) - old_workers) == 2, "two new workers")
    for attempt in range(2, 4):
        assert get(f"{server.url}/missing/{attempt}")[0] == 404

    def alerts() -> list[dict]:
        records = written_records(tmp_path / "logs" / "service.log")
        return [record for record in records if record.get("event.kind") == "alert"]

    [alert] = wait_until(alerts, "malicious_excess_404")
    assert alert["event.reason"] == "4 404 answers within 60 s"
