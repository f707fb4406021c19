"""A baked service under real gunicorn on a free loopback port, stopped by its pid."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornService:
    def __init__(self, project, workdir: Path, workers: int = 3, **settings: str):
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = workdir / "logs"
        self.output = workdir / "gunicorn.out"
        self.env = {
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "LOG_FILE": str(self.log_dir / "service.log"),
            **settings,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "GunicornService":
        env = {**os.environ, "PYTHONPATH": str(self.project.path / "src"), **self.env}
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                [self.project.python, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                 "--bind", f"127.0.0.1:{self.port}"],
                cwd=self.project.path, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: see stop()
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.output.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/livez", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or still booting
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {timeout} s")

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10, **kwargs)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process and self.process.poll() is None:
            started = time.monotonic()
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # A master that hangs must not outlive the test, nor leave its workers behind.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise
            self.last_stop_seconds = time.monotonic() - started

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
