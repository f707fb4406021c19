"""The alert rules and Alertmanager configuration, live: the service under gunicorn, a real
Prometheus evaluating the project's rules (made quick: 10 s windows, no wait) and a real
Alertmanager routing to a webhook of the test.
"""

import re
import time
from contextlib import ExitStack, contextmanager

import pytest

from {{ cookiecutter.package_name }}.views import SLOWEST_MS

from .monitoring_stack import (
    Alertmanager,
    Prometheus,
    Traffic,
    Webhook,
    quick_rules,
    wait_for,
)
from .promql import rules, series_of_the_job, service_job

HEALTHY_TRAFFIC = ["/api/items/1", "/"]
# Prometheus needs a few seconds for its first scrape; an alert then needs a few evaluations.
SECONDS_TO_NOTIFY = 30


@contextmanager
def alertmanager_and_webhook(tmp_path):
    """A real Alertmanager with the project's configuration, and the webhook it sends to."""
    with ExitStack() as running:
        webhook = Webhook().start()
        running.callback(webhook.stop)
        alertmanager = Alertmanager(tmp_path, webhook).start()
        running.callback(alertmanager.stop)
        yield alertmanager, webhook


@contextmanager
def alerting(gunicorn, tmp_path, *alertnames: str):
    """The service, Prometheus evaluating the quick alerts, Alertmanager and the webhook."""
    with ExitStack() as running:
        alertmanager, webhook = running.enter_context(alertmanager_and_webhook(tmp_path))
        service = gunicorn(workers=3)
        rules = quick_rules(tmp_path / "alerts.yml", *alertnames)
        target, manager = f"127.0.0.1:{service.port}", f"127.0.0.1:{alertmanager.port}"
        prometheus = Prometheus(tmp_path, target, rules, alertmanager=manager).start()
        running.callback(prometheus.stop)
        yield webhook, service, prometheus


def assert_routed(notification: dict, alertname: str, severity: str) -> None:
    """The alert reached the receiver of its severity, with its job and runbook link."""
    assert (notification["receiver"], notification["path"]) == (severity, f"/{severity}")
    alert = notification["alert"]
    assert alert["labels"]["severity"] == severity
    assert alert["labels"]["job"] == service_job()
    assert alert["annotations"]["runbook_url"] == f"docs/runbook.md#{alertname.lower()}"


def test_an_error_burst_pages_through_alertmanager(gunicorn, tmp_path):
    with alerting(gunicorn, tmp_path, "HighErrorRatio") as (webhook, service, prometheus):
        ratio = series_of_the_job("job:flask_http_request_5xx:ratio_rate5m")
        with Traffic(service.url, HEALTHY_TRAFFIC):
            wait_for(lambda: prometheus.query(f"{ratio} == 0"), "a 5xx ratio of 0")
        assert webhook.received == [], "an alert went off before any error"
        with Traffic(service.url, ["/api/fail"]):
            burst = time.monotonic()
            notification = webhook.wait_for_alert("HighErrorRatio")
            seconds_to_page = time.monotonic() - burst

    assert_routed(notification, "HighErrorRatio", severity="page")
    assert seconds_to_page < SECONDS_TO_NOTIFY


def test_slow_requests_open_a_ticket_through_alertmanager(gunicorn, tmp_path):
    (expression,) = [rule["expr"] for rule in rules() if rule.get("alert") == "HighLatencyP99"]
    threshold = float(re.search(r">\s*(\S+)\s*$", expression).group(1))
    slow_ms = round(threshold * 1500)  # half as slow again as the threshold
    if slow_ms > SLOWEST_MS:
        pytest.skip(f"/api/slow cannot take {slow_ms} ms, over its {SLOWEST_MS} ms")
    buckets = series_of_the_job("flask_http_request_duration_seconds_bucket")
    p99 = f"histogram_quantile(0.99, sum by (le) (rate({buckets}[10s])))"
    with alerting(gunicorn, tmp_path, "HighLatencyP99") as (webhook, service, prometheus):
        with Traffic(service.url, HEALTHY_TRAFFIC):
            wait_for(lambda: prometheus.query(f"{p99} < {threshold}"), "a p99 under the threshold")
        assert webhook.received == [], "an alert went off before any slow request"
        with Traffic(service.url, [f"/api/slow?ms={slow_ms}"]):
            slowdown = time.monotonic()
            notification = webhook.wait_for_alert("HighLatencyP99")
            seconds_to_ticket = time.monotonic() - slowdown

    assert_routed(notification, "HighLatencyP99", severity="ticket")
    assert seconds_to_ticket < SECONDS_TO_NOTIFY


def test_a_page_holds_back_the_tickets_of_its_job(tmp_path):
    """Alertmanager's inhibition, which amtool cannot test: alerts posted straight to it."""
    job = service_job()
    page = {"alertname": "HighErrorRatio", "severity": "page", "job": job}
    ticket = {"alertname": "HighLatencyP99", "severity": "ticket", "job": job}
    other_ticket = {**ticket, "job": f"{job}-other"}
    with alertmanager_and_webhook(tmp_path) as (alertmanager, webhook):
        alertmanager.post_alerts(page, ticket, other_ticket)

        def states() -> dict | None:
            found = {alert["labels"]["job"] + alert["labels"]["severity"]: alert["status"]
                     for alert in alertmanager.alerts()}  # fmt: skip
            return found if len(found) == 3 and found[job + "ticket"]["inhibitedBy"] else None

        found = wait_for(states, "the ticket inhibited")
        assert found[job + "page"]["state"] == "active"
        assert found[job + "ticket"]["state"] == "suppressed"
        assert found[f"{job}-otherticket"]["state"] == "active"
        paged = webhook.wait_for_alert("HighErrorRatio")
        other = webhook.wait_for_alert("HighLatencyP99", job=f"{job}-other")
    assert (paged["path"], other["path"]) == ("/page", "/ticket")
    assert webhook.alerts("HighLatencyP99", job=job) == [], "the held-back ticket went out"


def test_each_alert_of_each_job_is_a_notification_of_its_own(tmp_path):
    """Alertmanager's grouping, which amtool cannot test. Alerts grouped together would also
    hold back one that joins the group later, until the group's next notification."""
    job = service_job()
    posted = [
        {"alertname": "HighErrorRatio", "severity": "page", "job": job},
        {"alertname": "ErrorBudgetBurnFast", "severity": "page", "job": job},
        {"alertname": "HighErrorRatio", "severity": "page", "job": f"{job}-other"},
    ]
    with alertmanager_and_webhook(tmp_path) as (alertmanager, webhook):
        alertmanager.post_alerts(*posted)
        for labels in posted:
            webhook.wait_for_alert(labels["alertname"], job=labels["job"])
    assert [len(notification["alerts"]) for notification in webhook.received] == [1, 1, 1]
