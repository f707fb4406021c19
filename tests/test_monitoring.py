"""The default project's metrics, as a real Prometheus sees them.

The service runs under gunicorn with three workers and Prometheus scrapes it every second,
evaluating the project's own alerts.yml, while mixed traffic flows: once on the service's port,
once on the port of METRICS_PORT, which the gunicorn master serves. The generated project's
own live tests (tests/test_dashboard_live.py, tests/test_monitoring_live.py, run for every
combination by test_generation.py) check its dashboard queries and its alerts through
Alertmanager; these check what those do not: one series per worker, and exceptions by type.
"""

import threading
import time
from contextlib import ExitStack
from itertools import cycle

import pytest

from harness.loopback import free_port

from .prometheus import Prometheus
from .service import GunicornService

SCRAPE_INTERVAL = "1s"
# Successes, a 404 and an unhandled exception (500), round and round.
MIXED_TRAFFIC = ["/api/items/1", "/api/items/2", "/", "/api/items/5000", "/api/fail"]
WAIT_SECONDS = 60


class Traffic:
    """Requests sent round and round by a background thread, while the block runs."""

    def __init__(self, service: GunicornService, paths: list[str]):
        self.service = service
        self.paths = paths
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        for path in cycle(self.paths):
            if self.stopping.is_set():
                return
            self.service.get(path)
            time.sleep(0.005)  # about a hundred requests a second: leaves CPU for the servers

    def __enter__(self) -> "Traffic":
        self.thread.start()
        return self

    def __exit__(self, *_exception) -> None:
        self.stopping.set()
        self.thread.join(timeout=15)


def slug(project) -> str:
    return project.answers["project_slug"]


def monitoring_file(project, relative: str):
    return project.path / "monitoring" / relative


def prometheus_config(project, target: str, rules) -> dict:
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        # The job is named like the project's own prometheus.yml names it: alerts.yml selects it.
        "scrape_configs": [{"job_name": slug(project),
                            "static_configs": [{"targets": [target]}]}],
    }  # fmt: skip
    return config


def wait_for_result(prometheus: Prometheus, expression: str, series: int = 1) -> list[dict]:
    """The query's result once it has that many series."""
    deadline = time.monotonic() + WAIT_SECONDS
    while len(result := prometheus.query(expression)) < series and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(result) >= series, f"{expression}: {len(result)} series after {WAIT_SECONDS} s"
    return result


@pytest.fixture(scope="module")
def project(baked):
    return baked("all-defaults")


@pytest.fixture(scope="module", params=["service port", "METRICS_PORT"])
def scraped(project, tmp_path_factory, request):
    """Prometheus scraping the service while mixed traffic flows, until the module ends."""
    workdir = tmp_path_factory.mktemp("monitoring")
    if request.param == "METRICS_PORT":
        metrics_port = free_port()
        service = GunicornService(project, workdir, workers=3, METRICS_PORT=str(metrics_port))
        target = f"127.0.0.1:{metrics_port}"
    else:
        service = GunicornService(project, workdir, workers=3)
        target = f"127.0.0.1:{service.port}"
    alerts = monitoring_file(project, "prometheus/alerts.yml")
    prometheus = Prometheus(workdir, prometheus_config(project, target, alerts))
    with ExitStack() as running:
        for server in (service, prometheus):
            server.start()
            running.callback(server.stop)
        running.enter_context(Traffic(service, MIXED_TRAFFIC))
        wait_for_result(prometheus, f'up{{job="{slug(project)}"}} == 1')
        yield prometheus


def test_every_worker_reports_its_cpu_and_memory(project, scraped):
    prometheus = scraped
    job = slug(project)
    for expression in (f'process_worker_cpu_seconds{{job="{job}"}}',
                       f'process_worker_resident_memory_bytes{{job="{job}"}} > 1e6'):  # fmt: skip
        series = wait_for_result(prometheus, expression, series=3)
        assert len({one["metric"]["pid"] for one in series}) == 3, expression


def test_unhandled_exceptions_are_counted_by_type_and_route(project, scraped):
    prometheus = scraped
    series = wait_for_result(
        prometheus, f'flask_http_request_exceptions_by_type_total{{job="{slug(project)}"}}'
    )
    labels = {(one["metric"]["exception_type"], one["metric"]["url_rule"]) for one in series}
    assert labels == {("RuntimeError", "/api/fail")}
