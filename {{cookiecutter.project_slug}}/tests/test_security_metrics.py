"""security_events_total: counted by action alone, in the workers and in the gunicorn master."""

import random
import re

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability.security import (
    VOCABULARY,
    security_event,
    thresholds,
)

from .conftest import get, make_settings
from .promql import rules
from .test_metrics import sample, scrape, scrape_server
from .test_security_refusals import HOSTILE_REQUEST, send_raw
from .test_security_thresholds import wait_until

EVENTS = "security_events_total"
ACTION_PATTERN = re.compile(r'\baction=~"([^"]*)"')


def threshold_alerts() -> set[str]:
    """The events logged and counted when a client crosses one of the thresholds."""
    return {threshold.alert for threshold in thresholds(make_settings()).values()}


def actions_matched(expression: str) -> set[str]:
    [pattern] = ACTION_PATTERN.findall(expression)
    return set(pattern.split("|"))


def event_series(metrics_text: str) -> list[str]:
    return [line for line in metrics_text.splitlines() if line.startswith(EVENTS + "{")]


def test_every_action_starts_at_zero_so_that_the_first_event_shows(client):
    series = event_series(scrape(client))
    assert len(series) == len(VOCABULARY)
    assert all(line.endswith(" 0.0") for line in series)


def test_events_are_counted_by_action(client):
    client.get("/.env")
    client.get("/api/private")
    client.get("/api/private")
    text = scrape(client)
    assert sample(text, EVENTS, action="malicious_direct_reference") == 1
    assert sample(text, EVENTS, action="authn_login_fail") == 2
    assert sample(text, EVENTS, action="authz_fail") == 0


def test_nothing_an_attacker_sends_adds_a_series():
    app = create_app(make_settings(trusted_proxy_hops=1, security_404_limit=3))

    @app.post("/login")
    def login():
        security_event("authn_login_fail", user=request_user())
        return "", 401

    def request_user() -> str:
        return f"user-{random.getrandbits(64)}"

    client = app.test_client()
    for attempt in range(300):
        forwarded = {"X-Forwarded-For": f"10.{attempt % 7}.{attempt}.{attempt % 251}"}
        client.get(f"/.git/{random.getrandbits(64)}", headers=forwarded)
        client.post("/login", headers={**forwarded, "User-Agent": f"bot\x01{attempt}"})
    series = event_series(scrape(client))
    assert len(series) == len(VOCABULARY)
    assert {line.split('"')[1] for line in series} == set(VOCABULARY)
    assert sample(scrape(client), EVENTS, action="malicious_excess_404") > 0


def test_the_masters_alerts_are_counted_with_the_workers_events(gunicorn):
    server = gunicorn(workers=3, SECURITY_404_LIMIT="5")
    assert get(f"{server.url}/.env")[0] == 404
    for attempt in range(4):
        assert get(f"{server.url}/missing/{attempt}")[0] == 404

    def excess_404_alerts() -> float:
        return sample(scrape_server(server), EVENTS, action="malicious_excess_404")

    assert wait_until(excess_404_alerts, "malicious_excess_404 in /metrics") == 1
    assert sample(scrape_server(server), EVENTS, action="malicious_direct_reference") == 1


def test_a_request_gunicorn_refuses_is_counted_as_its_event(gunicorn):
    server = gunicorn(workers=2)
    assert send_raw(server.url, HOSTILE_REQUEST).startswith(b"HTTP/1.1 400 ")

    def refusals() -> float:
        return sample(scrape_server(server), EVENTS, action="malicious_extraneous")

    assert wait_until(refusals, "the refused request in /metrics") == 1


def test_the_threshold_alert_reads_the_event_of_every_threshold_and_of_no_other():
    """A threshold added to the service alerts only once the rule reads its event."""
    [alert] = [rule for rule in rules() if rule.get("alert") == "SecurityThresholdCrossed"]
    assert actions_matched(alert["expr"]) == threshold_alerts()
