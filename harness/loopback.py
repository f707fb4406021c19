"""A server process on 127.0.0.1 and a free port, ready when it answers, stopped by its pid."""

import http.client
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

LOOPBACK = "127.0.0.1"


_ports_given: set[int] = set()


def free_port() -> int:
    """A port free now and not given out before in this process: the kernel may hand the
    same free port to two calls in a row, and the servers a test starts need ports apart."""
    while True:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def fetch(url: str, timeout: float = 10) -> tuple[int, bytes]:
    """Status and body of a GET; an error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(condition, timeout: float = 60.0, what: str = "a condition"):
    """Poll `condition` until it returns something true, and return that. `timeout` is a
    bound for a stuck test, not a measure: on a busy machine waits run long."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)
    return result


class LoopbackProcess:
    """A server process on 127.0.0.1 and a free port, ready when `ready_path` answers 200.

    It runs in a session (and process group) of its own and is stopped by its pid: one that
    hangs on stop is killed with its children, so that it cannot outlive its caller. Those
    started and not stopped yet are in `running`, for a caller that failed half-way (the
    tests' conftest stops them). As a context manager it is stopped on leaving the block.
    """

    ready_path = "/"
    running: ClassVar[set["LoopbackProcess"]] = set()

    def __init__(self, name: str, output: Path):
        """`output` is the file that receives the process's output."""
        self.name = name
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.output = output
        self.process: subprocess.Popen | None = None

    def launch(
        self, command: list, cwd: Path, env: dict | None = None, stdout: int | None = None,
        timeout: float = 30.0,
    ):  # fmt: skip
        """Start `command` and wait until it is ready. `stdout`: a file descriptor for the
        process's stdout, its stderr then alone in `output`; by default `output` has both."""
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env,
                stdout=output if stdout is None else stdout,
                stderr=subprocess.STDOUT if stdout is None else output,
                start_new_session=True,
            )  # fmt: skip
        LoopbackProcess.running.add(self)
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.output.read_text()[-3000:]}")
            if self.is_ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s")

    def is_ready(self) -> bool:
        try:
            return fetch(self.url + self.ready_path, timeout=2)[0] == 200
        except (OSError, http.client.HTTPException):  # not listening yet, or still booting
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM; a process still running after `timeout` is killed with its group, and
        TimeoutExpired raised. `last_stop_seconds` is how long a stop in time took."""
        LoopbackProcess.running.discard(self)
        if self.process is None or self.process.poll() is not None:
            return
        started = time.monotonic()
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        self.last_stop_seconds = time.monotonic() - started

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()
