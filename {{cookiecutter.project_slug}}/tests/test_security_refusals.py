"""Requests that gunicorn refuses before the app sees them are security events too."""

import json
import socket
import time
from pathlib import Path

import pytest
from gunicorn.http.errors import (
    ConfigurationProblem,
    InvalidHeader,
    InvalidHeaderName,
    InvalidRequestLine,
    InvalidResponseHeader,
    LimitRequestHeaders,
)

from {{ cookiecutter.package_name }}.observability.security_refusals import (
    refusal_action,
)

from .ecs import written_records

# A terminal escape sequence in a header: the log injection gunicorn answers with a 400.
HOSTILE_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x1b[2Jb\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (InvalidHeader("USER-AGENT"), "malicious_extraneous"),
        (InvalidHeaderName("X\x01"), "malicious_extraneous"),
        (InvalidRequestLine("GET"), "input_validation_fail"),
        (LimitRequestHeaders("too many"), "input_validation_fail"),
        (InvalidResponseHeader("X-App"), None),  # the app's fault, not the client's
        (ConfigurationProblem("forwarded"), None),
        (ValueError("no request error"), None),
    ],
)
def test_each_refusal_of_the_clients_doing_is_an_event(error, action):
    assert refusal_action(error) == action


def send_raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        return connection.recv(1024)


def refusal_events(log_file: Path) -> list[dict]:
    records = written_records(log_file)
    return [record for record in records if "refused by gunicorn" in record.get("event.reason", "")]


def wait_for_refusal_event(log_file: Path) -> dict:
    deadline = time.monotonic() + 60  # a bound for a stuck test, on a busy machine
    while not (events := refusal_events(log_file)):
        assert time.monotonic() < deadline, "no security event for the refused request"
        time.sleep(0.05)
    [event] = events
    return event


@pytest.mark.parametrize(("hops", "client"), [("0", "127.0.0.1"), ("1", "unknown")])
def test_a_header_gunicorn_refuses_is_an_alert_naming_the_client(gunicorn, tmp_path, hops, client):
    """Behind a trusted proxy the peer is the proxy, and the refused request's
    X-Forwarded-For was never read: the client is unknown rather than the proxy framed."""
    server = gunicorn(workers=2, TRUSTED_PROXY_HOPS=hops)
    assert send_raw(server.url, HOSTILE_REQUEST).startswith(b"HTTP/1.1 400 ")

    event = wait_for_refusal_event(tmp_path / "logs" / "service.log")
    assert event["event.action"] == "malicious_extraneous"
    assert event["event.kind"] == "alert"
    assert event["client.ip"] == client
    assert event["event.reason"] == "refused by gunicorn: InvalidHeader"
    assert "\x1b" not in json.dumps(event, ensure_ascii=False)
    # gunicorn's own line, which its handler writes before the event, names the peer too.
    messages = [record["message"] for record in written_records(tmp_path / "logs" / "service.log")]
    assert any(message.startswith("Invalid request from ip=127.0.0.1:") for message in messages)


def test_a_request_refused_on_a_unix_socket_is_an_event_of_an_unknown_client(gunicorn, tmp_path):
    path = tmp_path / "service.sock"
    gunicorn(workers=1, first_bind=f"unix:{path}")
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(10)
        connection.connect(str(path))
        connection.sendall(HOSTILE_REQUEST)
        assert connection.recv(1024).startswith(b"HTTP/1.1 400 ")

    event = wait_for_refusal_event(tmp_path / "logs" / "service.log")
    assert (event["event.action"], event["client.ip"]) == ("malicious_extraneous", "unknown")
