"""Stopping: out of rotation first (SHUTDOWN_DRAIN_SECONDS), then started requests finish."""

import os
import signal
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import pytest

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import shutdown

from . import stuck_app
from .conftest import get, make_settings, wait_until

WAIT_SECONDS = 60  # a deadline for what should take well under a second


def status_while_accepting(url: str) -> int | None:
    """The answer's status; None once the service has stopped accepting, as it does when it
    stops: its listening socket is closed (refused), or is being closed with this connection
    still waiting in the backlog (reset: what a balancer that has taken the instance out of
    rotation spares its clients)."""
    try:
        return get(url)[0]
    except ConnectionResetError:
        return None
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError | ConnectionResetError):
            return None
        raise


@pytest.mark.parametrize("drain_seconds", [0.5, 5])  # a drain under a second is one too
def test_readiness_fails_once_shutdown_has_begun_and_liveness_does_not(monkeypatch, drain_seconds):
    monkeypatch.setattr(shutdown, "SHUTTING_DOWN", shutdown.ShutdownFlag())
    client = create_app(make_settings(shutdown_drain_seconds=drain_seconds)).test_client()
    assert client.get("/readyz").status_code == 200

    shutdown.SHUTTING_DOWN.set()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["shutdown"][0]["output"] == (
        "RuntimeError: shutting down: SIGTERM received"
    )
    assert client.get("/livez").status_code == 200


def test_without_a_drain_there_is_no_shutdown_check(client):
    assert client.get("/readyz").get_json() == {"status": "pass"}


def test_sigterm_drains_every_worker_then_stops_failing_no_request(gunicorn):
    drain_seconds = 2
    server = gunicorn(workers=3, SHUTDOWN_DRAIN_SECONDS=str(drain_seconds))
    sent = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)
    wait_until(lambda: get(f"{server.url}/readyz")[0] == 503, "/readyz to fail", WAIT_SECONDS)

    # Meanwhile it serves every request, /readyz failing, until it stops accepting.
    answered: dict[str, set[int]] = {"/api/items/1": set(), "/readyz": set()}
    while True:
        statuses = {path: status_while_accepting(server.url + path) for path in answered}
        if None in statuses.values():
            break
        for path, status in statuses.items():
            answered[path].add(status)
        assert time.monotonic() < sent + drain_seconds + WAIT_SECONDS, "it never stopped"
    stopped_accepting = time.monotonic()

    assert answered == {"/api/items/1": {200}, "/readyz": {503}}
    assert stopped_accepting - sent >= drain_seconds, "it stopped before the drain was over"
    assert server.process.wait(timeout=WAIT_SECONDS) == 0
    assert "serving 2.0 s more, then stopping" in server.output.read_text()


def test_a_second_sigterm_stops_without_waiting_for_the_drain(gunicorn):
    server = gunicorn(workers=1, SHUTDOWN_DRAIN_SECONDS="600")
    os.kill(server.process.pid, signal.SIGTERM)
    wait_until(lambda: get(f"{server.url}/readyz")[0] == 503, "/readyz to fail", WAIT_SECONDS)
    os.kill(server.process.pid, signal.SIGTERM)
    assert server.process.wait(timeout=WAIT_SECONDS) == 0


def test_a_request_started_before_the_stop_is_answered(gunicorn, tmp_path):
    held = tmp_path / "held"
    held.mkdir()
    server = gunicorn(workers=1, app=stuck_app.APP, HELD_REQUESTS=str(held))
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(get, f"{server.url}/held", timeout=stuck_app.STUCK_SECONDS)
        wait_until((held / "entered").exists, "the request to reach its view", WAIT_SECONDS)
        os.kill(server.process.pid, signal.SIGTERM)
        # The master has the signal: it stops its worker next. (Not "Worker exiting" from a
        # second, idle worker: one still booting dies of SIGTERM without a word.)
        wait_until(
            lambda: "Handling signal: term" in server.output.read_text(), "the stop", WAIT_SECONDS
        )
        (held / "released").touch()
        status, _, body = answer.result()

    assert (status, body) == (200, b"released\n")
    assert server.process.wait(timeout=WAIT_SECONDS) == 0
