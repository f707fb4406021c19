"""The baked service the tests load: gunicorn from the harness, with the tests' defaults."""

import re
import time
from pathlib import Path

import requests

from harness.gunicorn_service import BakedService


class GunicornService(BakedService):
    """A baked project under gunicorn on a free loopback port, stopped by its pid.

    Its output goes to `workdir/gunicorn.out`, its log file to `workdir/logs`.
    """

    def __init__(self, project, workdir: Path, workers: int = 3, app: str = "", **settings: str):
        """`app` replaces the service's app, given in gunicorn's notation."""
        self.project = project
        self.log_dir = workdir / "logs"
        settings = {"LOG_FILE": str(self.log_dir / "service.log"), **settings}
        super().__init__(project.python, project.path, workdir / "gunicorn.out", workers, app,
                         **settings)  # fmt: skip

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10, **kwargs)

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` workers have loaded the app (each reports its memory when it starts):
        ready means one worker answers, and on a busy machine the others may still be loading."""
        deadline = time.monotonic() + timeout
        while len(self.reporting_workers()) < count:
            assert time.monotonic() < deadline, f"{count} workers did not start in {timeout} s"
            time.sleep(0.1)

    def reporting_workers(self) -> set[str]:
        series = re.compile(r'^process_worker_resident_memory_bytes\{pid="(\d+)"\}', re.MULTILINE)
        return set(series.findall(self.get("/metrics").text))
