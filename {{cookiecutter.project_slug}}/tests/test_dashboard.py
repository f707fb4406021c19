"""The Grafana dashboards load, and every query can find its data.

Grafana accepts a dashboard with a duplicate panel id, an undefined variable or a misspelt
metric name and just shows an empty panel: these checks catch that before anyone looks.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from .conftest import PROJECT_DIR
from .promql import (
    TARGET_LABELS,
    grouping_labels,
    known_series,
    metric_names,
    rules,
    service_job,
    unknown_labels,
)
from .test_alerts import run

DASHBOARDS = sorted((PROJECT_DIR / "monitoring" / "grafana" / "dashboards").glob("*.json"))
# Variables Grafana defines itself.
BUILT_IN_VARIABLES = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s"}
QUANTILE = re.compile(r"histogram_quantile\(\s*([\d.]+)")
QUANTILE_ARGUMENT = re.compile(r"histogram_quantile\(\s*[\d.]+\s*,(.*)")
PERCENTILE = re.compile(r"\bp(\d{2})\b")  # p50, p95, p99
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
AGGREGATION = re.compile(r"\s*(sum|count|avg|min|max|group|stddev|stdvar|topk|bottomk)\b")
# 40 days of traffic, hour by hour: 6,000 requests an hour that succeed, and 5xx answers at
# 120 an hour, then 60 an hour over the last 30 days (the SLO's window).
TRAFFIC_HOURS = 40 * 24
SLO_HOURS = 30 * 24
OK_PER_HOUR = 6000
ERRORS_PER_HOUR_BEFORE = 120
ERRORS_PER_HOUR = 60
# The latency of those requests, as (hours, requests an hour, of them slower than 0.1 s)
# segments: all slow until the last 30 days; no request in their first hour (so that their
# window's first sample is the same whether Prometheus counts the sample at its edge, as 2.x
# does, or not, as 3.x does); 4 % slow for the next 359 hours; none in the last 15 days.
LATENCY_SEGMENTS = [
    (TRAFFIC_HOURS - SLO_HOURS, OK_PER_HOUR, OK_PER_HOUR),
    (1, 0, 0),
    (SLO_HOURS - 361, OK_PER_HOUR, OK_PER_HOUR // 25),
    (360, OK_PER_HOUR, 0),
]
# What prometheus_client adds to a per-worker gauge under gunicorn, not in the test client.
PER_WORKER_LABELS = {"pid"}
TARGET_MATCHER = re.compile(r'\b(job|instance)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def targets(dashboard: dict) -> list[dict]:
    return [target for panel in panels(dashboard) for target in panel.get("targets", [])]


def variable_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(selector, label) of each `label_values(selector, label)` variable."""
    return [
        re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]).groups()
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]


@pytest.fixture(params=DASHBOARDS, ids=lambda path: path.name)
def dashboard(request) -> dict:
    return load(request.param)


def test_there_is_a_dashboard():
    assert DASHBOARDS


def test_panel_ids_are_unique(dashboard):
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_target_has_an_expression_and_a_ref_id(dashboard):
    for panel in panels(dashboard):
        panel_targets = panel.get("targets", [])
        ref_ids = [target.get("refId") for target in panel_targets]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target.get("expr", "").strip() for target in panel_targets), panel["title"]


def test_every_query_uses_the_datasource_variable(dashboard):
    for panel in panels(dashboard):
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_every_variable_used_is_defined(dashboard):
    variables = dashboard["templating"]["list"]
    defined = {variable["name"] for variable in variables}
    queries = [variable.get("query") for variable in variables]  # not "current": $__all
    used = set(re.findall(r"\$\{?(\w+)", json.dumps([dashboard["panels"], queries])))
    assert used - defined - BUILT_IN_VARIABLES == set()


def test_dashboard_can_be_provisioned_and_imported(dashboard):
    assert dashboard["uid"] and dashboard["id"] is None
    assert dashboard["schemaVersion"] >= 39
    assert {panel["type"] for panel in panels(dashboard)} <= {"row", "stat", "timeseries"}


def test_every_metric_queried_is_exported(dashboard, client):
    known = known_series(client).keys()
    queried = {name for target in targets(dashboard) for name in metric_names(target["expr"])}
    queried |= {name for query, _ in variable_queries(dashboard) for name in metric_names(query)}
    assert queried, "no metric names found: is metric_names() broken?"
    assert queried - known == set()


def test_every_label_queried_is_exported(dashboard, client):
    """Each label a query matches on or sums by is one its series has: a misspelt one
    (`route` for `url_rule`) leaves a panel with one line, or none, and no error."""
    known = known_series(client)
    problems = {
        target["expr"]: found
        for target in targets(dashboard)
        if (found := unknown_labels(target["expr"], known))
    }
    for selector, label in variable_queries(dashboard):
        if found := unknown_labels(f"sum by ({label}) ({selector})", known):
            problems[f"label_values({selector}, {label})"] = found
    assert problems == {}


def test_jobs_named_are_the_one_prometheus_scrapes(dashboard):
    """The variables pick the job: a query naming one must name the service's scrape job."""
    queries = [target["expr"] for target in targets(dashboard)]
    queries += [variable["query"] for variable in dashboard["templating"]["list"]]
    named = set(re.findall(r'\bjob\s*=~?\s*"([^"$]+)"', " ".join(map(str, queries))))
    assert named <= {service_job()}


def test_each_quantile_is_the_one_its_legend_or_title_names(dashboard):
    checked = 0
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            for quantile in QUANTILE.findall(target["expr"]):
                named = PERCENTILE.findall(target["legendFormat"]) or PERCENTILE.findall(
                    panel["title"]
                )
                percentiles = [pytest.approx(int(percentile)) for percentile in named]
                assert [float(quantile) * 100] == percentiles, panel["title"]
                checked += 1
    assert checked, "no histogram_quantile found: is QUANTILE broken?"


def test_each_quantile_keeps_the_bucket_boundaries(dashboard):
    """histogram_quantile reads the `le` label of the buckets: summed away, the panel is empty."""
    for target in targets(dashboard):
        for argument in QUANTILE_ARGUMENT.findall(target["expr"]):
            groupings = grouping_labels(argument)
            assert groupings and "le" in groupings[0][0], target["expr"]


def test_legend_labels_are_labels_the_query_keeps(dashboard, client):
    """A legend naming a label that the query sums away, or a misspelt one, shows each line
    with a blank where the label would be: the lines cannot be told apart."""
    known = known_series(client)
    problems = {
        target["legendFormat"]: target["expr"]
        for target in targets(dashboard)
        if (legend := set(LEGEND_LABEL.findall(target["legendFormat"])))
        and not legend <= kept_labels(target["expr"], known)
    }
    assert problems == {}


def kept_labels(expression: str, known: dict[str, set[str]]) -> set[str]:
    """The labels of the series an expression gives: those its outermost aggregation keeps,
    or else those of the one series it reads."""
    if match := QUANTILE_ARGUMENT.match(expression.lstrip()):
        groupings = grouping_labels(match[1])
        return groupings[0][0] - {"le"} if groupings else set()
    if AGGREGATION.match(expression):
        groupings = grouping_labels(expression)
        return groupings[0][0] if groupings else set()
    [name] = metric_names(expression)
    return known[name] | TARGET_LABELS | PER_WORKER_LABELS


def test_every_query_keeps_to_the_job_and_instance_chosen(dashboard):
    """The dashboard's variables choose the job and the instances each panel shows."""
    for target in targets(dashboard):
        for label, operator, value in TARGET_MATCHER.findall(target["expr"]):
            assert (operator, value) == ("=~", f"${label}"), target["expr"]


def traffic_series(with_errors: bool) -> list[dict]:
    """promtool's input: the service's request counters over the hours of TRAFFIC_HOURS."""
    target = f'job="{service_job()}", instance="10.0.0.1:8000", method="GET"'
    requests, by_route = "flask_http_request_total", "flask_http_request_duration_seconds_count"
    ok = counter([(OK_PER_HOUR, TRAFFIC_HOURS)])
    series = {
        selector(requests, f'{target}, status="200"'): ok,
        selector(by_route, f'{target}, status="200", url_rule="/ok"'): ok,
    }
    series.update(latency_buckets(target))
    if with_errors:
        # The rate changes at the start of the last 30 days: the series' values there are
        # those of a steady rate, and so is what Prometheus makes of them.
        errors = counter(
            [(ERRORS_PER_HOUR_BEFORE, TRAFFIC_HOURS - SLO_HOURS), (ERRORS_PER_HOUR, SLO_HOURS)]
        )
        series[selector(requests, f'{target}, status="500"')] = errors
        series[selector(by_route, f'{target}, status="500", url_rule="/fail"')] = errors
    return [{"series": name, "values": values} for name, values in series.items()]


def latency_buckets(target: str) -> dict[str, str]:
    """The request duration histogram of LATENCY_SEGMENTS: fast requests under 0.1 s, slow
    ones between 0.1 and 0.5 s."""
    name = "flask_http_request_duration_seconds_bucket"
    labels = f'{target}, status="200", url_rule="/ok"'
    fast = counter([(requests - slow, hours) for hours, requests, slow in LATENCY_SEGMENTS])
    every = counter([(requests, hours) for hours, requests, _ in LATENCY_SEGMENTS])
    return {
        selector(name, f'{labels}, le="0.1"'): fast,
        selector(name, f'{labels}, le="0.5"'): every,
        selector(name, f'{labels}, le="+Inf"'): every,
    }


def counter(segments: list[tuple[int, int]]) -> str:
    """promtool's notation of a counter from (increase an hour, hours) segments."""
    values, total = ["0"], 0
    for per_hour, hours in segments:
        values.append(f"{total + per_hour}+{per_hour}x{hours - 1}")
        total += per_hour * hours
    return " ".join(values)


def p99_of_the_last(hours: int) -> float:
    """The 99th percentile of the requests of the last `hours`, as histogram_quantile
    interpolates it in the bucket from 0.1 to 0.5 s."""
    hourly = [
        (requests, slow) for length, requests, slow in LATENCY_SEGMENTS for _ in range(length)
    ]
    last = hourly[-hours:]
    total, slow = sum(requests for requests, _ in last), sum(slow for _, slow in last)
    return 0.1 + 0.4 * (0.99 * total - (total - slow)) / slow


def selector(name: str, labels: str) -> str:
    return name + "{" + labels + "}"


def expected_values(with_errors: bool) -> dict[str, tuple[str, float] | None]:
    """By panel title, the labels and value of the one series each query of the panel must
    give at the end of the traffic, or None for no series."""
    errors_per_hour = ERRORS_PER_HOUR if with_errors else 0
    ratio = errors_per_hour / (OK_PER_HOUR + errors_per_hour)  # both steady over 30 days
    return {
        "5xx error ratio": ("{}", ratio),
        "Availability, 30 days": ("{}", 1 - ratio),
        "Error budget left, 30 days": ("{}", 1 - ratio / alert_thresholds()["budget"]),
        "5xx by endpoint": ('{url_rule="/fail"}', errors_per_hour / 3600) if with_errors else None,
        "Latency p99, 30 days": ("{}", p99_of_the_last(SLO_HOURS)),
    }


def gives(expression: str, expected: tuple[str, float] | None) -> dict:
    """promtool's check that the query gives the expected series, its value to within 1e-12:
    promtool 2.x compares values exactly, and Prometheus's arithmetic is not Python's."""
    at_the_end = {"eval_time": f"{TRAFFIC_HOURS}h"}
    if expected is None:
        return {"expr": expression, **at_the_end, "exp_samples": []}
    labels, value = expected
    return {
        "expr": f"abs(({expression}) - {value}) < bool 1e-12",
        **at_the_end,
        "exp_samples": [{"labels": labels, "value": 1}],
    }


def as_grafana_fills(expression: str) -> str:
    """The query with the variables set to every job and instance, on hourly samples."""
    variables = {"job": service_job(), "instance": ".*", "__rate_interval": "4h"}
    return re.sub(r"\$(\w+)", lambda match: variables[match[1]], expression)


@pytest.mark.parametrize("with_errors", [True, False], ids=["with 5xx", "without any 5xx"])
def test_error_and_budget_panels_show_what_their_titles_say(dashboard, tmp_path, with_errors):
    """promtool evaluates the queries on 40 days of known traffic: the errors, the budget and
    the 30 days' p99 are counted over the right window, the errors from the right statuses,
    and no error at all is a ratio of 0 (and a full budget), not an empty panel."""
    expected = expected_values(with_errors)
    checks = [
        gives(as_grafana_fills(target["expr"]), expected[panel["title"]])
        for panel in panels(dashboard)
        if panel["title"] in expected
        for target in panel["targets"]
    ]
    assert {panel["title"] for panel in panels(dashboard)} >= expected.keys()
    unit_test = {
        "rule_files": [],
        "tests": [
            {"interval": "1h", "input_series": traffic_series(with_errors),
             "promql_expr_test": checks}
        ],
    }  # fmt: skip
    path = tmp_path / "panels_test.yml"
    path.write_text(yaml.safe_dump(unit_test, sort_keys=False))
    result = run("promtool", "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def alert_thresholds() -> dict[str, float]:
    """The numbers alerts.yml compares with, by what they measure."""
    exprs = {rule["alert"]: rule["expr"] for rule in rules() if "alert" in rule}
    fast = re.findall(r"> \(([\d.]+) \* ([\d.e-]+)\)", exprs["ErrorBudgetBurnFast"])
    slow = re.findall(r"> \(([\d.]+) \* ([\d.e-]+)\)", exprs["ErrorBudgetBurnSlow"])
    budgets = {float(budget) for _, budget in fast + slow}
    assert len(budgets) == 1, f"the burn-rate alerts disagree on the error budget: {budgets}"
    return {
        "error ratio": float(re.search(r"> ([\d.]+)\s*$", exprs["HighErrorRatio"])[1]),
        "latency": float(re.search(r"\) > ([\d.]+)\s*$", exprs["HighLatencyP99"])[1]),
        "budget": budgets.pop(),
        "fast burn": float(fast[0][0]),
        "slow burn": float(slow[0][0]),
    }


def threshold_steps(panel: dict) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [step["value"] for step in steps if step["value"] is not None]


def test_thresholds_shown_are_the_ones_the_alerts_use(dashboard):
    """A red line elsewhere than where the alert fires tells the on-call the wrong story."""
    alert = alert_thresholds()
    expected = {
        "5xx error ratio": [alert["error ratio"]],
        "Latency p95": [alert["latency"] / 2, alert["latency"]],
        "Latency p99, 30 days": [alert["latency"]],
        "Instances up": [1],  # green from one: TargetDown fires when none is up
        "Availability, 30 days": [pytest.approx(1 - alert["budget"])],
        "Error budget burn rate": [alert["slow burn"], alert["fast burn"]],
    }
    checked = set()
    for panel in panels(dashboard):
        if panel["title"] in expected:
            assert threshold_steps(panel) == expected[panel["title"]], panel["title"]
            checked.add(panel["title"])
        for target in panel.get("targets", []):
            if "/ " in target["expr"] and re.search(r"/ [\d.e-]+$", target["expr"]):
                # Burn rate and budget left divide by the error budget.
                budget = float(target["expr"].rpartition("/ ")[2])
                assert budget == pytest.approx(alert["budget"]), panel["title"]
    assert checked == set(expected)


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ('sum by (le, url_rule) (rate(a_bucket{job=~"$job", x="a{b}"}[$__rate_interval]))',
         {"a_bucket"}),
        ("histogram_quantile(0.99, sum(rate(b[5m]))) > 1e-3", {"b"}),
        ("c:d:ratio_rate1h / ignoring(x) group_left e or vector(0)", {"c:d:ratio_rate1h", "e"}),
    ],
)  # fmt: skip
def test_metric_names_are_found_in_expressions(expression, names):
    assert metric_names(expression) == names
