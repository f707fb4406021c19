"""The default project notices scripted attacks among normal users, and flags no normal user.

A bounded form of `python -m benchmarks.attacks`: the service under gunicorn with 3
workers, a real Prometheus evaluating its alerts.yml (time-scaled, over a synthetic day of
normal history) and a real Alertmanager routing to a webhook. Every attack kind that has a
detector runs once, all at once, among a hundred normal clients; the run ends when every
episode is detected (or the grace after the attacks runs out).
"""

import pytest

from benchmarks.attack_mix import make_plan
from benchmarks.attack_stack import (
    format_duration,
    parse_duration,
    raw_recording_rules,
    scale_expression,
    scale_rules,
)
from benchmarks.attacks import detectable_kinds, report, run_mix

from .prometheus import require_binary

NORMAL_CLIENTS = 100
NORMAL_RATE = 0.25  # requests a second from each: 25 a second in all
LEAD_IN_SECONDS = 15
WARM_UP_SECONDS = 15
# Detected by the security events' own alerts; other kinds join when the rules have theirs.
SECURITY_KINDS = {"credential_stuffing", "walk_404", "path_scan", "hostile_headers"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("1d", 86400), ("500ms", 0.5), ("2w", 1209600), ("10s", 10)],
)
def test_durations_parse_as_prometheus_reads_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m5", "5 m", "1.5h", "5min", "-5m"])
def test_what_is_no_duration_is_refused(text):
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration(text)


def test_durations_are_written_back_exactly():
    assert [format_duration(s) for s in (10, 0.5, 2880, 1.25)] == [
        "10s",
        "500ms",
        "2880s",
        "1250ms",
    ]
    with pytest.raises(ValueError, match="too short"):
        format_duration(0.0001)


def test_every_range_subquery_and_offset_of_an_expression_is_scaled():
    expression = (
        'avg_over_time(x:rate5m{job="a", status=~"5.."}[1d] offset 1h)'
        " and rate(y_total[5m]) > 0 and max_over_time(z[1h:5m]) and w offset 3h"
    )
    assert scale_expression(expression, 30) == (
        'avg_over_time(x:rate5m{job="a", status=~"5.."}[2880s] offset 120s)'
        " and rate(y_total[10s]) > 0 and max_over_time(z[120s:10s]) and w offset 360s"
    )


def test_rules_are_scaled_whole_and_the_original_is_left_alone():
    rules = {
        "groups": [
            {
                "name": "g",
                "interval": "1m",
                "rules": [
                    {"alert": "A", "expr": "increase(e_total[10m]) > 0", "for": "10m"},
                    {"record": "r:e:rate5m", "expr": "rate(e_total[5m])"},
                ],
            }
        ]
    }
    scaled = scale_rules(rules, 30)
    assert scaled["groups"][0]["interval"] == "2s"
    assert scaled["groups"][0]["rules"] == [
        {"alert": "A", "expr": "increase(e_total[20s]) > 0", "for": "20s"},
        {"record": "r:e:rate5m", "expr": "rate(e_total[10s])"},
    ]
    assert rules["groups"][0]["rules"][0]["for"] == "10m"


def test_only_recording_rules_over_scraped_series_are_backfilled():
    rules = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"record": "r:e:rate5m", "expr": "sum(rate(e_total[5m:1m]))"},
                    {"record": "r:e:mean1d", "expr": "avg_over_time(r:e:rate5m[1d])"},
                    {"alert": "A", "expr": "r:e:rate5m > 1"},
                ],
            }
        ]
    }
    assert raw_recording_rules(rules) == {
        "groups": [
            {"name": "g", "rules": [{"record": "r:e:rate5m", "expr": "sum(rate(e_total[5m:1m]))"}]}
        ]
    }


@pytest.mark.long
def test_attacks_are_detected_and_normal_users_are_not_flagged(baked, tmp_path):
    for binary in ("prometheus", "prometheus-alertmanager", "promtool"):
        require_binary(binary)
    project = baked("all-defaults")
    kinds = detectable_kinds(project.path)
    assert set(kinds) >= SECURITY_KINDS
    plan = make_plan(
        NORMAL_CLIENTS,
        rounds=1,
        lead_in_seconds=LEAD_IN_SECONDS,
        normal_rate=NORMAL_RATE,
        kinds=kinds,
        together=True,
    )
    outcome = run_mix(project.python, project.path, tmp_path, plan, warm_up_seconds=WARM_UP_SECONDS)
    table = report(outcome)
    print(table)  # the figures, for whoever reads the test's output

    for result in outcome.episodes:
        kind = result.episode.kind
        assert result.alert_seconds is not None, f"{kind}: no alert at the webhook\n{table}"
        if result.expected.log_actions:  # a request burst is no security event
            assert result.log_seconds is not None, f"{kind}: no log event naming it\n{table}"
            # Every address is named: the one that claims another's in X-Forwarded-For too.
            assert result.clients_named == len(result.episode.clients), f"{kind}\n{table}"
    assert {result.episode.kind for result in outcome.episodes} == set(kinds)
    detected = sum(result.detected for result in outcome.episodes)
    assert detected >= 0.95 * len(outcome.episodes), table
    false_positives = outcome.false_positives
    assert false_positives.pairs >= NORMAL_CLIENTS, table
    assert false_positives.share <= 0.01, f"{sorted(false_positives.flagged)}\n{table}"
    # The address the stuffing attacker wrote into X-Forwarded-For is not framed.
    assert plan.normal_clients[0] not in {client for client, _ in false_positives.flagged}
    assert outcome.quiet_alerts == [], f"alerts from normal traffic alone\n{table}"
    assert outcome.requests["unanswered"] == 0, table
    # The per-client counts live in the master: bounded, not growing with the requests.
    assert outcome.memory_kb["master"] < 200 * 1024, table
