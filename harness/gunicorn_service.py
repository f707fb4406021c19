"""gunicorn on a free loopback port: a baked project with its own gunicorn.conf.py, or any app."""

import os
import signal
from collections.abc import Sequence
from pathlib import Path

from .loopback import LOOPBACK, LoopbackProcess, fetch, wait_for


class Gunicorn(LoopbackProcess):
    """`python -m gunicorn ARGUMENTS --bind 127.0.0.1:PORT`: a master and its workers.

    `settings` are environment variables on top of this process's own.
    """

    def __init__(
        self, python: Path, arguments: Sequence[str], cwd: Path, output: Path,
        pythonpath: Sequence[Path] = (), ready_path: str = "/livez", **settings: str,
    ):  # fmt: skip
        super().__init__("gunicorn", output)
        self.python = python
        self.arguments = list(arguments)
        self.cwd = cwd
        self.pythonpath = list(pythonpath)
        self.ready_path = ready_path
        self.env = settings

    def command(self) -> list[str]:
        return [str(self.python), "-m", "gunicorn", *self.arguments,
                "--bind", f"{LOOPBACK}:{self.port}"]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, self.pythonpath)), **self.env}

    def start(self, stdout: int | None = None, timeout: float = 30.0):
        """`stdout`: a file descriptor for the service's stdout; by default `output` has it."""
        return self.launch(self.command(), self.cwd, self.environment(), stdout, timeout)

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]

    def reload(self, timeout: float = 120.0) -> None:
        """HUP, and wait until as many new workers as before have replaced the old ones.

        A master that exits meanwhile (new workers that cannot boot halt it) fails at once,
        with its last output."""
        old = set(self.worker_pids())
        self.process.send_signal(signal.SIGHUP)

        def replaced() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited on HUP: {self.output.read_text()[-3000:]}")
            pids = set(self.worker_pids())
            return len(pids) == len(old) and not pids & old

        wait_for(replaced, timeout, what="gunicorn to replace its workers after a HUP")

    def metric(self, name: str, **labels: str) -> float:
        """The total of one metric on /metrics, over the samples with these labels."""
        return metric_total(fetch(self.url + "/metrics")[1].decode(), name, **labels)


class BakedService(Gunicorn):
    """A baked project served from its folder, with its gunicorn.conf.py and `src` on the path."""

    def __init__(
        self, python: Path, project: Path, output: Path, workers: int, app: str = "",
        options: Sequence[str] = (), pythonpath: Sequence[Path] = (), ready_path: str = "/livez",
        **settings: str,
    ):  # fmt: skip
        """`app` replaces the project's app, in gunicorn's notation; `options` are gunicorn's."""
        arguments = ["-c", "gunicorn.conf.py", *options, *([app] if app else [])]
        super().__init__(python, arguments, project, output, [project / "src", *pythonpath],
                         ready_path, WEB_CONCURRENCY=str(workers), **settings)  # fmt: skip
        # Its settings read PORT: the port of --bind, unless `settings` give their own.
        self.env = {"PORT": str(self.port), **self.env}


def metric_total(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of one metric, in Prometheus' text format, whose labels include
    the given ones."""
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, _, value = line[len(name) + 1 :].rpartition("} ")
        if all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
            total += float(value)
    return total
