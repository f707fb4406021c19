"""A real Prometheus and Alertmanager on loopback, for the live monitoring tests.

They are the binaries of the Debian and Ubuntu packages `prometheus` and
`prometheus-alertmanager`; without them the tests are skipped (CI installs them). Each runs
on a free 127.0.0.1 port with temporary storage and the project's own configuration, made
quick: 1 s scrapes and evaluations, Alertmanager sending at once to a webhook of the test.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import cycle
from pathlib import Path

import pytest
import yaml

from .conftest import PROJECT_DIR, free_port, get, stop_process_group
from .promql import ALERTS, service_job

ALERTMANAGER_CONFIG = PROJECT_DIR / "monitoring" / "alertmanager" / "alertmanager.yml"
INTERVAL = "1s"  # scrapes and rule evaluations
WAIT_SECONDS = 60.0  # generous: the machine may be busy with other work


def require(binary: str) -> str:
    """The binary's path; a missing one skips the test, but fails it in CI."""
    path = shutil.which(binary)
    if path:
        return path
    message = f"{binary} is not installed (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: the CI workflow installs it")
    pytest.skip(message)


def wait_for(condition, what: str, timeout: float = WAIT_SECONDS):
    """condition()'s first true value, asked every half second until the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.5)
    return result


def api(url: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


class Server:
    """Prometheus or Alertmanager in a process of its own, stopped by its pid."""

    def __init__(self, workdir: Path, name: str, config: dict):
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.config_file = self.workdir / f"{name}.yml"
        self.config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = self.workdir / "output.log"
        self.command: list[str] = []
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self._ready, f"{self.command[0]} ready on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.command[0]} exited:\n{self.output.read_text()[-3000:]}")
        try:
            return get(f"{self.url}/-/ready")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_process_group(self.process)


class Prometheus(Server):
    def __init__(self, workdir: Path, target: str, rules: Path, alertmanager: str = ""):
        config = {
            "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL,
                       "evaluation_interval": INTERVAL},
            "rule_files": [str(rules)],
            # Named as prometheus.yml names it: the rules select that job.
            "scrape_configs": [{"job_name": service_job(),
                                "static_configs": [{"targets": [target]}]}],
        }  # fmt: skip
        if alertmanager:
            static_configs = [{"targets": [alertmanager]}]
            config["alerting"] = {"alertmanagers": [{"static_configs": static_configs}]}
        super().__init__(workdir, "prometheus", config)
        self.command = [
            require("prometheus"),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def query(self, expression: str) -> list[dict]:
        return self._api("query", query=expression)

    def query_range(self, expression: str, start: float, end: float) -> list[dict]:
        return self._api("query_range", query=expression, start=start, end=end, step=1)

    def label_values(self, label: str, selector: str) -> list[str]:
        return self._api(f"label/{label}/values", **{"match[]": selector})

    def _api(self, endpoint: str, **parameters) -> list:
        query = urllib.parse.urlencode(parameters)
        body = api(f"{self.url}/api/v1/{endpoint}?{query}")
        return body["data"]["result"] if "result" in body["data"] else body["data"]


class Alertmanager(Server):
    def __init__(self, workdir: Path, webhook: "Webhook"):
        super().__init__(workdir, "alertmanager", quick_alertmanager_config(webhook.url))
        self.command = [
            require("prometheus-alertmanager"),
            f"--config.file={self.config_file}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # a single instance: no gossip port
        ]

    def post_alerts(self, *labels: dict) -> None:
        api(f"{self.url}/api/v2/alerts", [{"labels": one} for one in labels])

    def alerts(self) -> list[dict]:
        return api(f"{self.url}/api/v2/alerts")


def quick_alertmanager_config(webhook_url: str) -> dict:
    """The project's alertmanager.yml, its receivers posting to the test's webhook at once."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"]["group_wait"] = "1s"
    # An alert that flaps as its window fills goes out resolved at the first flush; when it
    # fires again, the group would otherwise wait group_interval (minutes) to tell.
    config["route"]["group_interval"] = "1s"
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            webhook["url"] = webhook_url + urllib.parse.urlsplit(webhook["url"]).path
    return config


def quick_rules(path: Path, *alertnames: str) -> Path:
    """alerts.yml's recording rules and the named alerts, over 10 s windows, with no wait."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        group["rules"] = [
            {**rule, "expr": re.sub(r"\[\d+[mh]\]", "[10s]", rule["expr"]),
             **({"for": "0s"} if "for" in rule else {})}
            for rule in group["rules"]
            if "record" in rule or rule["alert"] in alertnames
        ]  # fmt: skip
    path.write_text(yaml.safe_dump(rules))
    return path


class Webhook:
    """Receives Alertmanager's notifications in a thread of the test process."""

    def __init__(self):
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_arguments):
                pass  # keep the test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "Webhook":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, alertname: str, **labels: str) -> list[dict]:
        """Each firing alert of that name (and labels) received, in its notification."""
        wanted = {"alertname": alertname, **labels}
        return [
            {**notification, "alert": alert}
            for notification in list(self.received)
            for alert in notification["alerts"]
            if alert["status"] == "firing" and wanted.items() <= alert["labels"].items()
        ]

    def wait_for_alert(self, alertname: str, **labels: str) -> dict:
        """The first notification of a firing alert of that name, and that alert."""
        found = wait_for(lambda: self.alerts(alertname, **labels), f"{alertname} at the webhook")
        return found[0]


class Traffic:
    """Requests to the service, round and round in a thread, while the block runs."""

    def __init__(self, url: str, paths: list[str], limit: int = 20_000):
        self.url = url
        self.paths = paths
        self.limit = limit  # bounded, even if the block never ends
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        for _, path in zip(range(self.limit), cycle(self.paths), strict=False):
            if self.stopping.is_set():
                return
            with contextlib.suppress(OSError):  # refused or timed out: the next one may pass
                get(self.url + path)
            time.sleep(0.01)  # leaves CPU for the servers

    def __enter__(self) -> "Traffic":
        self.thread.start()
        return self

    def __exit__(self, *_exception) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
