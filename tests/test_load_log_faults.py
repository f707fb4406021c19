"""Under load, logging loses no line on reload, and a stuck reader or a full disk stalls nothing."""

import json
import os
import select
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from harness.loopback import wait_for

from .load import send_all
from .service import GunicornService
from .test_load_logs import access_ids, mixed_paths, read_lines, served


def timed_load(url: str, count: int, clients: int = 8) -> list[tuple[str, int | None, float]]:
    """(request id, status or None, seconds) of each request, from `clients` at once.

    After a request that got no answer the others are not sent: a stalled service fails
    the test in seconds, not in `count` timeouts."""
    sessions = threading.local()
    stalled = threading.Event()

    def send(number: int):
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        request_id = uuid.uuid4().hex
        started = time.monotonic()
        status = None
        if not stalled.is_set():
            try:
                response = sessions.session.get(
                    f"{url}/api/items/{number % 1000}",
                    headers={"X-Request-ID": request_id},
                    timeout=10,
                )
                status = response.status_code
            except requests.RequestException:
                stalled.set()
        return request_id, status, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(send, range(count)))


def load_until(service: GunicornService, text: str, batch: int) -> list:
    """Timed requests, a batch at a time, until the service's output says `text`."""
    outcomes = []
    while text not in service.output.read_text():
        assert len(outcomes) < 5_000, f"never saw {text!r}"
        outcomes += timed_load(service.url, batch)
        assert all(status == 200 for _, status, _ in outcomes), "a request got no answer"
    return outcomes


def hup_mid_load(service: GunicornService, paths: list[str]) -> list:
    """Send the paths from 8 clients, and a HUP once requests flow."""
    log_file = service.log_dir / "service.log"
    outcomes = []
    load = threading.Thread(
        target=lambda: outcomes.extend(send_all(service.url, paths, concurrency=8))
    )
    size = log_file.stat().st_size
    load.start()
    wait_for(lambda: log_file.stat().st_size > size + 20_000, what="requests to flow")
    os.kill(service.process.pid, signal.SIGHUP)
    load.join(timeout=120)
    assert not load.is_alive()
    return outcomes


def test_reloads_under_load_lose_no_line_and_repeat_none(baked, tmp_path):
    service = served(baked, tmp_path)
    outcomes = []
    for _ in range(5):  # 1,500 requests, a HUP in the middle of each fifth
        outcomes += hup_mid_load(service, mixed_paths(75))
    service.stop()

    ids = access_ids(read_lines(service.log_dir))
    answered = [outcome.request_id for outcome in outcomes if outcome.status is not None]
    assert len(answered) == 1500
    assert [request_id for request_id in answered if ids[request_id] != 1] == []


class StuckStdoutService(GunicornService):
    """gunicorn whose stdout is a pipe that nobody reads until `read_stdout()`."""

    def start(self) -> "StuckStdoutService":
        self.stdout, pipe_end = os.pipe()  # the read end: open, and left unread
        self.received = b""
        try:
            return super().start(stdout=pipe_end)
        finally:
            os.close(pipe_end)  # the service has its own copy

    def read_stdout(self) -> None:
        """Read from now on, as a collector that came back would."""

        def read() -> None:
            while select.select([self.stdout], [], [], 30)[0]:
                chunk = os.read(self.stdout, 1024 * 1024)
                if not chunk:
                    return
                self.received += chunk

        threading.Thread(target=read, daemon=True).start()


def test_a_stdout_nobody_reads_stalls_no_request(baked, tmp_path):
    service = StuckStdoutService(baked("all-defaults"), tmp_path, workers=3).start()
    stderr = service.output  # stderr alone goes there
    # Enough lines to fill the pipe and the master's buffer, then some.
    outcomes = load_until(service, "dropping lines to console", batch=500)
    outcomes += timed_load(service.url, 500)
    slowest = max(seconds for _, _, seconds in outcomes)
    print(f"{len(outcomes)} requests with stdout stuck, slowest {slowest * 1000:.0f} ms")
    assert all(status == 200 for _, status, _ in outcomes)
    assert slowest < 5.0
    dropped = service.metric("log_lines_dropped_total", sink="console", reason="buffer_full")
    assert dropped > 0

    service.read_stdout()
    wait_for(lambda: "writing console again" in stderr.read_text(), what="the resume notice")
    later = timed_load(service.url, 50)
    wait_for(lambda: all(request_id.encode() in service.received for request_id, _, _ in later),
             what="later lines on stdout")  # fmt: skip
    service.stop()

    notices = [line for line in stderr.read_text().splitlines() if line.startswith("logging:")]
    assert len([line for line in notices if "dropping lines to console" in line]) == 1
    assert any("lines were dropped" in line for line in notices)
    ids = access_ids(read_lines(service.log_dir))
    assert all(ids[request_id] == 1 for request_id, _, _ in outcomes + later)


def test_a_record_too_large_for_the_relay_reaches_the_file(baked, tmp_path):
    # gunicorn limits a header to 8 KB unless told otherwise; the access line logs the agent.
    service = served(baked, tmp_path, GUNICORN_CMD_ARGS="--limit-request-field_size 400000")
    agent = "a" * 300_000
    response = service.get("/", headers={"User-Agent": agent, "X-Request-ID": "huge-agent"})
    assert response.status_code == 200
    service.stop()

    [access] = [json.loads(line) for line in read_lines(service.log_dir) if "huge-agent" in line]
    assert access["log.logger"] == "gunicorn.access"
    assert access["user_agent.original"].startswith("aaaa")
    assert access["user_agent.original"].endswith(" characters cut by the log relay]")
    assert "log relay:" not in service.output.read_text()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB file system for the log file; mounting one takes root, as in CI."""
    folder = tmp_path / "logs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_full_log_disk_stalls_no_request_and_writing_resumes(baked, tmp_path, small_disk):
    service = served(baked, tmp_path)
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"." * 700_000)
    before = load_until(service, "cannot write", batch=300)
    before += timed_load(service.url, 300)
    slowest = max(seconds for _, _, seconds in before)
    lost = service.metric("log_lines_dropped_total", sink="file", reason="no_space")
    print(f"{len(before)} requests, slowest {slowest * 1000:.0f} ms, {lost:.0f} lines lost")
    assert all(status == 200 for _, status, _ in before)
    assert slowest < 5.0
    assert lost > 0

    ballast.unlink()
    load_until(service, "lines were lost", batch=10)
    after = timed_load(service.url, 100)
    service.stop()

    output = service.output.read_text()
    assert output.count("cannot write") == 1
    assert "Logging error" not in output
    lines = read_lines(small_disk)
    ids = access_ids(lines)  # every line whole: a line cut by the full disk was taken out
    assert all(ids[request_id] == 1 for request_id, _, _ in after)
    [resumed] = [json.loads(line) for line in lines if "log.lines_lost" in line]
    assert resumed["log.lines_lost"] >= lost
    assert Path(service.log_dir / "service.log").exists()
