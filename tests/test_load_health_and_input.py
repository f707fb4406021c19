"""Health under load and a drained instance; hostile headers and bad settings."""

import json
import os
import signal
import socket
import threading

import pytest

from harness.loopback import wait_for

from .load import send_all
from .service import GunicornService

FORGED = '{"log.level": "critical", "message": "forged admin login"}'


def test_readiness_follows_the_drain_file_and_liveness_holds_under_load(baked, tmp_path):
    drain_file = tmp_path / "drain"
    service = GunicornService(baked("all-defaults"), tmp_path, workers=3, LOG_FILE="",
                              DRAIN_FILE=str(drain_file)).start()  # fmt: skip
    try:
        background = []
        load = threading.Thread(
            target=lambda: background.extend(send_all(service.url, ["/api/items/1"] * 3000))
        )
        load.start()
        assert [service.get("/readyz").status_code for _ in range(10)] == [200] * 10
        drain_file.touch()
        draining = [service.get("/readyz") for _ in range(10)]  # reaches every worker
        assert [response.status_code for response in draining] == [503] * 10
        assert draining[0].json()["status"] == "fail"
        drain_file.unlink()
        assert [service.get("/readyz").status_code for _ in range(10)] == [200] * 10
        liveness = send_all(service.url, ["/livez"] * 200, concurrency=4)
        load.join(timeout=120)
    finally:
        service.stop()
    assert {outcome.status for outcome in liveness} == {200}
    assert {outcome.status for outcome in background} == {200}


def raw_request(port: int, header_lines: list[bytes]) -> bytes:
    request = b"GET /api/items/5 HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
        line + b"\r\n" for line in header_lines
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request + b"Connection: close\r\n\r\n")
        return connection.recv(65536)


HOSTILE_HEADERS = {
    "newline-in-request-id": [b"X-Request-ID: abc\n" + FORGED.encode()],
    "carriage-return-in-user-agent": [b"User-Agent: probe\r" + FORGED.encode()],
    "oversized-request-id": [b"X-Request-ID: " + b"a" * 9000],
    "json-breaking-request-id": [b'X-Request-ID: "}, {"forged": true'],
    "control-characters": [b"X-Request-ID: \x1b[31mred\x1b[0m", b"User-Agent: \x00\x07bell"],
    "non-utf8-user-agent": [b"User-Agent: \xff\xfe\xfa"],
    "forged-json-user-agent": [b"User-Agent: " + FORGED.encode()],
}


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_hostile_headers_cannot_forge_or_break_log_lines(baked, tmp_path, log_format):
    service = GunicornService(baked("all-defaults"), tmp_path, workers=2,
                              LOG_FORMAT=log_format).start()  # fmt: skip
    try:
        answers = {
            name: raw_request(service.port, lines) for name, lines in HOSTILE_HEADERS.items()
        }
        assert service.get("/livez").status_code == 200, "the service survived"
    finally:
        service.stop()

    for name, answer in answers.items():
        status = int(answer.split(b" ", 2)[1])
        assert status in (200, 400, 431), f"{name}: {answer[:100]!r}"
    records = [
        json.loads(line) for line in (service.log_dir / "service.log").read_text().splitlines()
    ]
    assert not any(record["message"] == "forged admin login" for record in records)
    assert not any(record.get("log.level") == "critical" for record in records)
    request_ids = {record["http.request.id"] for record in records if "http.request.id" in record}
    assert all(len(rid) <= 128 and rid.isprintable() and '"' not in rid for rid in request_ids)
    if log_format == "text":
        console = service.output.read_text(errors="replace").splitlines()
        assert not any(line.startswith("{") for line in console), "a forged line on the console"


BAD_SETTINGS = {
    "LOG_LEVEL": "LOUD",
    "LOG_RETENTION": "forever",
    "LOG_ROTATION": "sometimes",
    "SENTRY_DSN": "not-a-dsn",
    "WEB_CONCURRENCY": "0",
    "LOG_FILE": "{tmp}/plain-file/service.log",  # its folder is a file: not writable
}


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS.items())
def test_a_bad_setting_stops_the_service_with_one_line(baked, tmp_path, name, value):
    (tmp_path / "plain-file").write_text("")
    project = baked("all-defaults")
    result = project.run(
        str(project.python), "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0",
        timeout=30, **{name: value.format(tmp=tmp_path)},
    )  # fmt: skip
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == [output[0]] and output[0].startswith(f"my-service: invalid setting {name}=")


def test_a_bad_setting_on_reload_keeps_the_service_and_its_settings(baked, tmp_path):
    project = baked("all-defaults")
    service = GunicornService(project, tmp_path, workers=2).start()
    env_file = project.path / ".env"  # HUP re-reads the environment and this file
    try:
        env_file.write_text("LOG_LEVEL=LOUD\n")
        os.kill(service.process.pid, signal.SIGHUP)
        refusal = _wait_for_log_line(service, "reload refused")
        assert "LOG_LEVEL='LOUD'" in refusal
        assert service.process.poll() is None, "the master must not exit on a bad reload"
        assert service.get("/api/items/1").status_code == 200
    finally:
        env_file.unlink()
        service.stop()


def _wait_for_log_line(service, text: str) -> str:
    log_file = service.log_dir / "service.log"

    def line_with_text() -> str | None:
        return next((line for line in log_file.read_text().splitlines() if text in line), None)

    return wait_for(line_with_text, what=f"a log line with {text!r}")
