"""A real Prometheus on loopback.

The server is the Debian package's binary; it runs on a free port with its own
temporary storage and is stopped by its process id.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from harness.loopback import LoopbackProcess


def require_binary(name: str, packages: str = "prometheus prometheus-alertmanager") -> str:
    """The binary's path; a missing one skips the test, except in CI where it must be there."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")  # daemons, for users
    if path:
        return path
    message = f"{name} is not installed (apt-get install {packages})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: .ci/run installs it in CI")
    pytest.skip(message)


class LoopbackServer(LoopbackProcess):
    """A Prometheus server: subclasses write their configuration into `workdir`
    and set `command`."""

    ready_path = "/-/ready"

    def __init__(self, workdir: Path, name: str):
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        super().__init__(name, self.workdir / "output.log")
        self.command: list[str] = []

    def start(self):
        return self.launch(self.command, self.workdir)


class Prometheus(LoopbackServer):
    def __init__(self, workdir: Path, config: dict):
        super().__init__(workdir, "prometheus")
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.command = [
            require_binary("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def query(self, expression: str, at: float | None = None) -> list[dict]:
        """The expression's value now, or at the time `at` (seconds since the epoch)."""
        return self._api("query", query=expression, **({} if at is None else {"time": at}))

    def query_range(self, expression: str, start: float, end: float, step: float) -> list[dict]:
        return self._api("query_range", query=expression, start=start, end=end, step=step)

    def label_values(self, label: str, selector: str) -> list[str]:
        return self._api(f"label/{label}/values", **{"match[]": selector})

    def alerts(self) -> list[dict]:
        """The alerts pending or firing."""
        return self._api("alerts")["alerts"]

    def rule_groups(self) -> list[dict]:
        return self._api("rules")["groups"]

    def _api(self, endpoint: str, **parameters) -> list:
        response = requests.get(f"{self.url}/api/v1/{endpoint}", params=parameters, timeout=10)
        body = response.json()
        if body["status"] != "success":
            raise AssertionError(f"{parameters}: {body.get('error')}")
        return body["data"]["result"] if "result" in body["data"] else body["data"]
