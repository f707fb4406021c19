"""A baked service under real gunicorn on a free loopback port, stopped by its pid."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackProcess:
    """A server process on 127.0.0.1 and a free port, ready when `ready_path` answers 200.

    It runs in a process group of its own and is stopped by its pid: one that hangs on
    stop is killed with its children, so that it cannot outlive the test. Those still
    running when a test ends (it failed before stopping them) are stopped by conftest.
    """

    ready_path = "/"
    running: ClassVar[set["LoopbackProcess"]] = set()

    def __init__(self, name: str, output: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = output
        self.process: subprocess.Popen | None = None

    def launch(self, command: list, cwd: Path, env: dict | None = None, timeout: float = 30.0):
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        LoopbackProcess.running.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.output.read_text()[-3000:]}")
            try:
                if requests.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or still booting
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s")

    def stop(self, timeout: float = 30.0) -> None:
        LoopbackProcess.running.discard(self)
        if self.process and self.process.poll() is None:
            started = time.monotonic()
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise
            self.last_stop_seconds = time.monotonic() - started


class GunicornService(LoopbackProcess):
    ready_path = "/livez"

    def __init__(self, project, workdir: Path, workers: int = 3, app: str = "", **settings: str):
        """`app` replaces the service's app, given in gunicorn's notation."""
        super().__init__("gunicorn", workdir / "gunicorn.out")
        self.project = project
        self.app = app
        self.log_dir = workdir / "logs"
        self.env = {
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "LOG_FILE": str(self.log_dir / "service.log"),
            **settings,
        }

    def start(self) -> "GunicornService":
        command = [self.project.python, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                   "--bind", f"127.0.0.1:{self.port}",
                   *([self.app] if self.app else [])]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(self.project.path / "src"), **self.env}
        return self.launch(command, self.project.path, env)

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of one metric whose labels include the given ones."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if not line.startswith(name + "{"):
                continue
            label_text, _, value = line[len(name) + 1 :].rpartition("} ")
            if all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
                total += float(value)
        return total


class EnvelopeServer:
    """tests/envelope_server.py in a process of its own: a stand-in for sentry.io."""

    def __init__(self, tmp_path: Path, hang: bool = False):
        self.port = free_port()
        self.output = tmp_path / "envelopes.jsonl"
        self.output.touch()
        self.dsn = f"http://public@127.0.0.1:{self.port}/42"
        command = [
            sys.executable,
            str(Path(__file__).with_name("envelope_server.py")),
            str(self.port),
            str(self.output),
        ]
        self.process = subprocess.Popen([*command, "--hang"] if hang else command)
        wait_for_port(self.port)

    def items(self, item_type: str) -> list[dict]:
        lines = self.output.read_text().splitlines()
        return [json.loads(json.loads(line)["payload"]) for line in lines
                if json.loads(line)["type"] == item_type]  # fmt: skip

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")
