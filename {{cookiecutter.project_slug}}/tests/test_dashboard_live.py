"""The dashboards, live: the service under gunicorn with three workers, mixed traffic, and a
real Prometheus scraping it every second with the project's own rules (their baselines made
quick). Every query of every dashboard must find data with its variables filled in as Grafana
fills them, and every label a legend shows must be on the series it draws.
"""

import json
import math
import re
import time
from contextlib import ExitStack
from pathlib import Path

from .monitoring_stack import WAIT_SECONDS, Prometheus, Traffic, wait_for
from .promql import ALERTS, series_of_the_job
from .test_dashboard import DASHBOARDS, LEGEND_LABEL, panels

# What Grafana puts in place of its own variables for a 1 s scrape interval and 1 s steps:
# $__rate_interval is at least four scrapes.
GRAFANA_BUILT_INS = {"__interval": "1s", "__rate_interval": "4s", "__range": "5m"}
# Successes, a 404 and an unhandled exception (500), round and round.
MIXED_TRAFFIC = ["/api/items/1", "/api/items/2", "/", "/api/items/5000", "/api/fail"]
# In a thread of its own, so that the latency panels see more than a few milliseconds.
SLOW_TRAFFIC = ["/api/slow?ms=250"]


def rules_with_quick_baselines(path: Path) -> Path:
    """alerts.yml with its baselines over the 10 s before the last 2 s instead of the day before
    the last hour, so that their bands have values seconds after the first scrape."""
    rules = ALERTS.read_text()
    quick = rules.replace("[1d] offset 1h", "[10s] offset 2s")
    assert quick != rules, "alerts.yml has no baseline over [1d] offset 1h"
    path.write_text(quick)
    return path


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


def series_drawn(prometheus: Prometheus, target: dict, variables: dict, since: float) -> list:
    """The series of the query with a finite value, as the panel asks for them."""
    expression = interpolate(target["expr"], variables)
    if target.get("instant"):
        result = [{**one, "values": [one["value"]]} for one in prometheus.query(expression)]
    else:
        result = prometheus.query_range(expression, since, time.time())
    return [one for one in result if any(math.isfinite(float(v)) for _, v in one["values"])]


def queries(dashboard: dict) -> dict[str, dict]:
    """Every target of the dashboard, by a name that tells where it is."""
    return {
        f"{panel['title']} ({target['refId']}): {target['expr']}": target
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    }


def draw(prometheus: Prometheus, dashboard: dict, since: float) -> tuple[dict, dict]:
    """The variables, and the series each query draws, once every query draws some (or
    when the time is up)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        variables = grafana_variables(prometheus, dashboard) or {}
        drawn = {
            name: (target, series)
            for name, target in queries(dashboard).items()
            if variables and (series := series_drawn(prometheus, target, variables, since))
        }
        if len(drawn) == len(queries(dashboard)) or time.monotonic() > deadline:
            return variables, drawn
        time.sleep(1)


def test_every_dashboard_query_finds_data(gunicorn, tmp_path):
    service = gunicorn(workers=3)
    rules = rules_with_quick_baselines(tmp_path / "alerts.yml")
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{service.port}", rules)
    with ExitStack() as running:
        running.enter_context(Traffic(service.url, MIXED_TRAFFIC))
        running.enter_context(Traffic(service.url, SLOW_TRAFFIC))
        prometheus.start()
        running.callback(prometheus.stop)
        started = time.time()
        wait_for(lambda: prometheus.query(series_of_the_job("up")), "a first scrape")
        for path in DASHBOARDS:
            dashboard = json.loads(path.read_text())
            variables, drawn = draw(prometheus, dashboard, started)
            assert sorted(queries(dashboard).keys() - drawn.keys()) == [], path.name
            # As Grafana escapes a value it puts into a regex: the dots of the address.
            assert variables["instance"] == f"127\\\\.0\\\\.0\\\\.1:{service.port}"
            legends_without_labels = {
                name: label
                for name, (target, series) in drawn.items()
                for label in LEGEND_LABEL.findall(target.get("legendFormat", ""))
                if not any(label in one["metric"] for one in series)
            }
            assert legends_without_labels == {}, path.name
