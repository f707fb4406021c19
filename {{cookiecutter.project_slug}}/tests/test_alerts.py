"""Alert rules and Alertmanager configuration, checked by Prometheus' own tools.

promtool and amtool come with the Debian and Ubuntu packages `prometheus` and
`prometheus-alertmanager`; without them these tests are skipped (CI installs them).
"""

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from {{ cookiecutter.package_name }}.observability.metrics import (
    METRICS_PATH,
)

from .conftest import PROJECT_DIR, get, stop_process_group
from .promql import (
    grouping_labels,
    known_series,
    metric_names,
    rules,
    selector_labels,
    service_job,
    unknown_labels,
)

PROMETHEUS_DIR = PROJECT_DIR / "monitoring" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
ALERTMANAGER_CONFIG = PROJECT_DIR / "monitoring" / "alertmanager" / "alertmanager.yml"
ALERT_PRINTER = PROJECT_DIR / "monitoring" / "alertmanager" / "alert_printer.py"
RUNBOOK = PROJECT_DIR / "docs" / "runbook.md"
# The receiver examples are commented out; these are their lines, without the "# ".
COMMENTED_EXAMPLE_LINE = re.compile(r"^([ ]+)# (?=slack_configs:|email_configs:|  )", re.MULTILINE)


def run(tool: str, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install prometheus prometheus-alertmanager)")
    return subprocess.run(
        [tool, *arguments], cwd=PROJECT_DIR, input=stdin, capture_output=True, text=True,
        timeout=120,  # a day-long unit test takes seconds (the traffic baselines read a day)
    )  # fmt: skip


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)", ALERTS.read_text(), re.MULTILINE)


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def test_rules_are_valid():
    result = run("promtool", "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configuration_is_valid():
    result = run("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_what_the_workers_export_follows_prometheus_naming_rules(gunicorn):
    """promtool's lint of a live scrape: suffixes that match the type, names in snake case,
    units spelled out."""
    server = gunicorn(workers=2)
    for path in ("/api/items/1", "/api/items/5000", "/api/fail"):
        get(f"{server.url}{path}")
    status, _, body = get(f"{server.url}{METRICS_PATH}")
    assert status == 200
    result = run("promtool", "check", "metrics", stdin=body.decode())
    assert result.returncode == 0, result.stdout + result.stderr


def rule_scenarios() -> list[str]:
    return [scenario["name"] for scenario in yaml.safe_load(ALERTS_TESTS.read_text())["tests"]]


@pytest.mark.parametrize("scenario", rule_scenarios())
def test_every_rule_passes_its_unit_tests(scenario, tmp_path):
    """promtool runs each scenario of alerts_test.yml alone (names are unique: one is
    selected): a failure names it, and a run that stops at the first failure (mutation
    testing) skips the other 30 s of scenarios."""
    unit_tests = yaml.safe_load(ALERTS_TESTS.read_text())
    unit_tests["rule_files"] = [str(PROMETHEUS_DIR / path) for path in unit_tests["rule_files"]]
    [selected] = [test for test in unit_tests["tests"] if test["name"] == scenario]
    unit_tests["tests"] = [selected]
    one_scenario = tmp_path / "alerts_test.yml"
    one_scenario.write_text(yaml.safe_dump(unit_tests, sort_keys=False))
    result = run("promtool", "test", "rules", str(one_scenario))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_configuration_is_valid():
    result = run("amtool", "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_commented_receiver_examples_are_valid_once_uncommented(tmp_path):
    text = ALERTMANAGER_CONFIG.read_text()
    uncommented = COMMENTED_EXAMPLE_LINE.sub(r"\1", text)
    for receiver in ("slack_configs", "email_configs"):
        assert re.search(rf"^ +{receiver}:", uncommented, re.MULTILINE), receiver
    config = tmp_path / "alertmanager.yml"
    config.write_text(uncommented)
    result = run("amtool", "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_firing_and_quiet_tests():
    tests = ALERTS_TESTS.read_text()
    for name in alert_names():
        cases = re.findall(rf"alertname: {name}\n\s+exp_alerts:(.*)", tests)
        assert "" in cases, f"{name}: no test where it fires"
        assert " []" in cases, f"{name}: no test where it stays quiet"


def test_every_alert_links_to_its_runbook_section():
    alerts = ALERTS.read_text()
    sections = re.findall(r"^## (\w+)$", RUNBOOK.read_text(), re.MULTILINE)
    assert sorted(sections) == sorted(alert_names())
    links = re.findall(r'runbook_url: "docs/runbook\.md#(\w+)"', alerts)
    assert links == [name.lower() for name in alert_names()]
    for label in ("severity: (page|ticket)", "summary: ", "description: "):
        assert len(re.findall(label, alerts)) == len(alert_names()), label


def test_alerts_select_the_job_prometheus_scrapes():
    """Renaming the scrape job in prometheus.yml would silence every alert."""
    selected = {
        value for rule in rules() for value in re.findall(r'\bjob\s*=~?\s*"([^"]*)"', rule["expr"])
    }
    assert selected == {service_job()}
    for rule in rules():
        assert 'job="' in rule["expr"], f"{rule.get('alert') or rule['record']} selects no job"


def test_every_series_a_rule_reads_is_exported(client):
    known = known_series(client).keys()
    read = {name for rule in rules() for name in metric_names(rule["expr"])}
    assert read - known == set()


def test_every_label_a_rule_matches_or_groups_by_is_exported(client):
    known = known_series(client)
    problems = {
        rule.get("alert") or rule["record"]: found
        for rule in rules()
        if (found := unknown_labels(rule["expr"], known))
    }
    assert problems == {}


def test_each_record_reads_the_window_its_name_gives():
    """A record named ..._rate5m (or mean1d, stddev1d) reads [5m] in every term: the `0 *`
    term that keeps a 0 where there was no error, over another window, would give a ratio
    of 0 to a job whose requests its own window no longer holds."""
    checked = 0
    for rule in rules():
        if window := re.search(r"(?:rate|mean|stddev)(\d+[smhd])$", rule.get("record", "")):
            assert set(re.findall(r"\[(\w+)\]", rule["expr"])) == {window[1]}, rule["record"]
            checked += 1
    assert checked, "no record named after its window: has the naming changed?"


def route(*labels: str) -> str:
    """The receiver Alertmanager's routing tree picks for an alert with these labels."""
    result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                 *labels)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_each_severity_goes_to_its_receiver():
    assert route("severity=page") == "page"
    assert route("severity=ticket") == "ticket"
    for alert in alerts():
        severity = alert["labels"]["severity"]
        labels = [f"alertname={alert['alert']}", f"job={service_job()}", f"severity={severity}"]
        assert route(*labels) == severity, alert["alert"]


def test_an_alert_without_a_severity_still_reaches_someone():
    """A rule added without a severity label falls through to the default receiver."""
    assert route("alertname=SomethingNew", f"job={service_job()}") == "ticket"


def test_prometheus_scrapes_the_route_the_service_serves_metrics_on():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == service_job()]
    assert job.get("metrics_path", "/metrics") == METRICS_PATH


def test_a_page_silences_the_tickets_of_its_job():
    """amtool cannot test inhibition: the rule is read here, and tried in test_monitoring_live."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert {
        (tuple(rule["source_matchers"]), tuple(rule["target_matchers"]), tuple(rule["equal"]))
        for rule in config["inhibit_rules"]
    } == {(('severity="page"',), ('severity="ticket"',), ("job",))}


@pytest.mark.parametrize(
    ("expression", "selectors", "groupings"),
    [
        ('sum by (le, url_rule) (rate(a_bucket{job=~"$job", x!="a{b}"}[5m]))',
         [("a_bucket", {"job", "x"})], [({"le", "url_rule"}, {"a_bucket"})]),
        ("sum(rate(b[5m])) without (pid) / count by (instance) (c{d=~'e'})",
         [("c", {"d"})], [({"pid"}, {"b"}), ({"instance"}, {"c"})]),
        ("histogram_quantile(0.99, sum by (job, le) (rate(d_bucket[5m]))) > 1",
         [], [({"job", "le"}, {"d_bucket"})]),
    ],
)  # fmt: skip
def test_labels_are_found_in_expressions(expression, selectors, groupings):
    assert selector_labels(expression) == selectors
    assert grouping_labels(expression) == groupings


def post_json(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_alert_printer_prints_a_line_per_alert_and_refuses_what_is_not_json(tmp_path):
    """The receiver that the local stack's Alertmanager posts to."""
    output = tmp_path / "printer.out"
    with output.open("wb") as out:
        # Port 0: a port picked here could be taken by another test before the printer binds it.
        printer = subprocess.Popen(
            [sys.executable, str(ALERT_PRINTER), "0"], stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (first_line := re.match(r"printing the alerts posted to port (\d+)\n",
                                          output.read_text())):  # fmt: skip
            assert printer.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.05)
        port = int(first_line[1])
        firing = {"labels": {"alertname": "HighErrorRatio", "severity": "page", "job": "svc"},
                  "annotations": {"summary": "5xx above 5 %"}}  # fmt: skip
        alerts = [{**firing, "status": status} for status in ("firing", "resolved")]
        url = f"http://127.0.0.1:{port}/page"
        assert post_json(url, json.dumps({"alerts": alerts}).encode()) == 200
        assert post_json(url, b"not json") == 400
    finally:
        stop_process_group(printer)
    where = "[alertname=HighErrorRatio job=svc severity=page] 5xx above 5 %"
    assert output.read_text().splitlines()[1:] == [
        f"page: FIRING HighErrorRatio {where}",
        f"page: RESOLVED HighErrorRatio {where}",
    ]
