"""The baked service the tests load: gunicorn from the harness, with the tests' defaults."""

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
