"""Alert rules and Alertmanager configuration, checked by Prometheus' own tools.

promtool and amtool come with the Debian and Ubuntu packages `prometheus` and
`prometheus-alertmanager`; without them these tests are skipped (CI installs them).
"""

import re
import shutil
import subprocess

import pytest

from .conftest import PROJECT_DIR

PROMETHEUS_DIR = PROJECT_DIR / "monitoring" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
ALERTMANAGER_CONFIG = PROJECT_DIR / "monitoring" / "alertmanager" / "alertmanager.yml"
RUNBOOK = PROJECT_DIR / "docs" / "runbook.md"
# The receiver examples are commented out; these are their lines, without the "# ".
COMMENTED_EXAMPLE_LINE = re.compile(r"^([ ]+)# (?=slack_configs:|email_configs:|  )", re.MULTILINE)


def run(tool: str, *arguments: str) -> subprocess.CompletedProcess:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install prometheus prometheus-alertmanager)")
    return subprocess.run(
        [tool, *arguments], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
    )


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)", ALERTS.read_text(), re.MULTILINE)


def test_rules_are_valid():
    result = run("promtool", "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configuration_is_valid():
    result = run("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_passes_its_unit_tests():
    result = run("promtool", "test", "rules", str(ALERTS_TESTS))
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
