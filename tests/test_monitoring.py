"""The default project's dashboard and alerts, against a real Prometheus and Alertmanager.

The service runs under gunicorn with three workers and Prometheus scrapes it every second,
evaluating the project's own alerts.yml. Every query of the dashboard must then find data,
with its variables filled in as Grafana fills them; a burst of errors must page, and slow
requests open a ticket, through Alertmanager to a webhook.
"""

import json
import math
import re
import threading
import time
from contextlib import ExitStack, contextmanager
from itertools import cycle
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from .prometheus import Alertmanager, Prometheus, Webhook
from .service import GunicornService

SCRAPE_INTERVAL = "1s"
# What Grafana puts in place of its own variables, for a 1 s scrape interval and 1 s steps:
# $__rate_interval is at least four scrapes.
GRAFANA_BUILT_INS = {"__interval": "1s", "__rate_interval": "4s", "__range": "5m"}
# Successes, a 404 and an unhandled exception (500), round and round.
MIXED_TRAFFIC = ["/api/items/1", "/api/items/2", "/", "/api/items/5000", "/api/fail"]
# Sent by a thread of its own, so that the latency panels see more than a few milliseconds
# without slowing the mixed traffic down.
SLOW_TRAFFIC = ["/api/slow?ms=250"]
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


def prometheus_config(project, service, rules, alertmanager=None) -> dict:
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        # The job is named like the project's own prometheus.yml names it: alerts.yml selects it.
        "scrape_configs": [{"job_name": slug(project),
                            "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}]}],
    }  # fmt: skip
    if alertmanager:
        targets = [f"127.0.0.1:{alertmanager.port}"]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
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


@pytest.fixture(scope="module")
def scraped(project, tmp_path_factory):
    """Prometheus scraping the service while mixed traffic flows, until the module ends."""
    workdir = tmp_path_factory.mktemp("monitoring")
    service = GunicornService(project, workdir, workers=3)
    alerts = monitoring_file(project, "prometheus/alerts.yml")
    prometheus = Prometheus(workdir, prometheus_config(project, service, alerts))
    with ExitStack() as running:
        for server in (service, prometheus):
            server.start()
            running.callback(server.stop)
        running.enter_context(Traffic(service, MIXED_TRAFFIC))
        running.enter_context(Traffic(service, SLOW_TRAFFIC))
        started = time.time()
        wait_for_result(prometheus, f'up{{job="{slug(project)}"}} == 1')
        yield prometheus, service, started


# Grafana side: panels, variables, queries.


def panels(dashboard: dict) -> list[dict]:
    return [nested for panel in dashboard["panels"] for nested in [panel, *panel.get("panels", [])]]


def grafana_regex_escape(value: str) -> str:
    """What Grafana does to a value it puts into a regex matcher of a Prometheus query."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda match: "\\\\" + match.group(), value)


def interpolate(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: variables[match.group(1)], text)


def grafana_variables(prometheus: Prometheus, dashboard: dict) -> dict[str, str] | None:
    """The query variables set to "All", as Grafana resolves them; None while one is empty."""
    variables = dict(GRAFANA_BUILT_INS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue  # the data source variable only chooses the Prometheus
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]).groups()
        found = prometheus.label_values(label, interpolate(selector, variables))
        values = [grafana_regex_escape(value) for value in found]
        if not values:
            return None
        variables[variable["name"]] = values[0] if len(values) == 1 else f"({'|'.join(values)})"
    return variables


def finds_data(prometheus: Prometheus, target: dict, variables: dict, since: float) -> bool:
    """True when the query returns at least one finite value, as the panel would ask it."""
    expression = interpolate(target["expr"], variables)
    if target.get("instant"):
        values = [series["value"] for series in prometheus.query(expression)]
    else:
        result = prometheus.query_range(expression, since, time.time(), 1)
        values = [value for series in result for value in series["values"]]
    return any(math.isfinite(float(number)) for _, number in values)


def test_every_dashboard_query_finds_data(project, scraped):
    prometheus, service, started = scraped
    dashboard_file = monitoring_file(project, f"grafana/dashboards/{slug(project)}.json")
    dashboard = json.loads(dashboard_file.read_text())
    queries = [(panel["title"], target) for panel in panels(dashboard)
               for target in panel.get("targets", [])]  # fmt: skip
    assert len(queries) >= 20

    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        variables = grafana_variables(prometheus, dashboard)
        empty = [
            f"{title} ({target['refId']}): {target['expr']}"
            for title, target in queries
            if not (variables and finds_data(prometheus, target, variables, started))
        ]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert empty == []
    assert variables["instance"] == f"127\\\\.0\\\\.0\\\\.1:{service.port}"  # as Grafana escapes it


def test_every_worker_reports_its_cpu_and_memory(project, scraped):
    prometheus, _, _ = scraped
    job = slug(project)
    for expression in (f'process_worker_cpu_seconds_total{{job="{job}"}}',
                       f'process_worker_resident_memory_bytes{{job="{job}"}} > 1e6'):  # fmt: skip
        series = wait_for_result(prometheus, expression, series=3)
        assert len({one["metric"]["pid"] for one in series}) == 3, expression


def test_unhandled_exceptions_are_counted_by_type_and_route(project, scraped):
    prometheus, _, _ = scraped
    series = wait_for_result(
        prometheus, f'flask_http_request_exceptions_by_type_total{{job="{slug(project)}"}}'
    )
    labels = {(one["metric"]["exception_type"], one["metric"]["url_rule"]) for one in series}
    assert labels == {("RuntimeError", "/api/fail")}


# Alerting: the project's rules and Alertmanager configuration, made quick.


def quick_rules(project, alertname: str) -> dict:
    """alerts.yml's recording rules and one alert, over 10 s windows, with no wait."""
    rules = yaml.safe_load(monitoring_file(project, "prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        group["rules"] = [
            {**rule, "expr": re.sub(r"\[\d+[mh]\]", "[10s]", rule["expr"]),
             **({"for": "0s"} if "for" in rule else {})}
            for rule in group["rules"]
            if "record" in rule or rule["alert"] == alertname
        ]  # fmt: skip
    return rules


def quick_alertmanager_config(project, webhook: Webhook) -> dict:
    """The project's Alertmanager configuration, posting to the test's webhook at once."""
    config = yaml.safe_load(monitoring_file(project, "alertmanager/alertmanager.yml").read_text())
    config["route"]["group_wait"] = "1s"
    # An alert that flaps as its window fills goes out resolved, unseen, at the first flush;
    # when it fires again, the group would otherwise wait group_interval (5 minutes).
    config["route"]["group_interval"] = "1s"
    for receiver in config["receivers"]:
        for webhook_config in receiver["webhook_configs"]:
            webhook_config["url"] = webhook.url + urlsplit(webhook_config["url"]).path
    return config


@contextmanager
def alerting(project, workdir: Path, alertname: str):
    """The service, and Prometheus evaluating one quick alert for Alertmanager and a webhook."""
    webhook = Webhook()
    alertmanager = Alertmanager(workdir, quick_alertmanager_config(project, webhook))
    service = GunicornService(project, workdir, workers=3)
    rules = workdir / "alerts.yml"
    rules.write_text(yaml.safe_dump(quick_rules(project, alertname)))
    prometheus = Prometheus(workdir, prometheus_config(project, service, rules, alertmanager))
    with ExitStack() as running:
        for server in (webhook, alertmanager, service, prometheus):
            server.start()
            running.callback(server.stop)
        yield webhook, service, prometheus


def test_an_error_burst_pages_through_alertmanager(project, tmp_path):
    with alerting(project, tmp_path, "HighErrorRatio") as (webhook, service, prometheus):
        ratio = f'job:flask_http_request_5xx:ratio_rate5m{{job="{slug(project)}"}}'
        with Traffic(service, ["/api/items/1", "/"]):
            wait_for_result(prometheus, f"{ratio} == 0")
        assert webhook.notifications.empty(), "an alert went off before any error"
        with Traffic(service, ["/api/fail"]):
            burst = time.monotonic()
            notification = webhook.wait_for_alert("HighErrorRatio", timeout=WAIT_SECONDS)
            seconds_to_page = time.monotonic() - burst

    assert_routed(notification, project, "HighErrorRatio", severity="page")
    assert seconds_to_page < 30


def test_slow_requests_open_a_ticket_through_alertmanager(project, tmp_path):
    threshold = float(project.answers["alert_latency_p99_seconds"])
    p99 = (
        "histogram_quantile(0.99, sum by (le) (rate("
        f'flask_http_request_duration_seconds_bucket{{job="{slug(project)}"}}[10s])))'
    )
    with alerting(project, tmp_path, "HighLatencyP99") as (webhook, service, prometheus):
        with Traffic(service, ["/api/items/1", "/"]):
            wait_for_result(prometheus, f"{p99} < {threshold}")
        assert webhook.notifications.empty(), "an alert went off before any slow request"
        # Half as slow again as the threshold: 1.5 s for the default answer, within /api/slow's 2 s.
        with Traffic(service, [f"/api/slow?ms={round(threshold * 1500)}"]):
            slowdown = time.monotonic()
            notification = webhook.wait_for_alert("HighLatencyP99", timeout=WAIT_SECONDS)
            seconds_to_ticket = time.monotonic() - slowdown

    assert_routed(notification, project, "HighLatencyP99", severity="ticket")
    assert seconds_to_ticket < 30


def assert_routed(notification: dict, project, alert_name: str, severity: str) -> None:
    """The alert reached the receiver of its severity, with its job and runbook link."""
    assert notification["receiver"] == severity
    assert notification["path"] == f"/{severity}"
    alert = notification["alert"]
    assert alert["labels"]["severity"] == severity
    assert alert["labels"]["job"] == slug(project)
    assert alert["annotations"]["runbook_url"] == f"docs/runbook.md#{alert_name.lower()}"
