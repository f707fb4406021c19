"""Does the default project notice attacks? Scripted attacks among normal users, measured.

Bakes the default project and serves it under gunicorn with 3 workers; a real Prometheus
scrapes it every second and evaluates the project's alerts.yml, time-scaled, over a
synthetic day of normal history (attack_stack.py); a real Alertmanager routes to a webhook
on loopback. Normal users browse (with an occasional stale link and mistyped token) while
attacks come from addresses of their own (attack_mix.py). Prints, per attack episode,
whether it was detected and how long after its start the first log event named it and the
first alert reached the webhook; and the share of normal clients' windows flagged.

    python -m benchmarks.attacks                 # 3 rounds of every attack, about 10 minutes
    python -m benchmarks.attacks --rounds 1 --normal-clients 20
"""

import argparse
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.gunicorn_service import BakedService
from harness.loopback import fetch, wait_for

from .attack_mix import (
    API_TOKEN,
    EXPECTED,
    FalsePositives,
    Plan,
    Sender,
    alert_text,
    attack_schedule,
    expected_of,
    is_expected,
    judge_episodes,
    make_plan,
    normal_false_positives,
    normal_schedule,
    security_log_events,
)
from .attack_stack import (
    HISTORY_GAP_SECONDS,
    INSTANCE,
    Alertmanager,
    Prometheus,
    Webhook,
    alert_names,
    history_openmetrics,
    longest_history_seconds,
    measure_rates,
    prometheus_config,
    referenced_metrics,
    scale_rules,
    write_history,
)

# The rules' durations are divided by this: 5m -> 10s, for 10m -> 20s, 1d -> 48m.
TIME_SCALE = 30
WARM_UP_SECONDS = 20  # normal traffic measured for the history's rates
# After the last attack, how long its alerts may take: a bound for a stuck run.
ALERT_GRACE_SECONDS = 90
WORKERS = 3


@dataclass
class Outcome:
    plan: Plan
    episodes: list
    false_positives: FalsePositives
    quiet_alerts: list  # alerts at the webhook during the lead-in: normal traffic alone
    other_alerts: list  # during the attacks, alerts that are no attack kind's own
    requests: dict
    memory_kb: dict
    seconds: float


def run_mix(
    python: Path,
    project: Path,
    workdir: Path,
    plan: Plan,
    seed: int = 13,
    time_scale: float = TIME_SCALE,
    warm_up_seconds: float = WARM_UP_SECONDS,
    **service_settings: str,
) -> Outcome:
    """Serve `project`, load it with `plan` under a monitoring stack, and judge the result."""
    began = time.time()
    rng = random.Random(seed)
    job = _job(project)
    log_file = workdir / "logs" / "service.log"
    service = BakedService(
        python,
        project,
        workdir / "gunicorn.out",
        WORKERS,
        LOG_FILE=str(log_file),
        API_TOKEN=API_TOKEN,
        **service_settings,
    )
    rules = scale_rules(project_rules(project), time_scale)
    workdir.mkdir(parents=True, exist_ok=True)
    defined = alert_names(rules)
    rules_file = workdir / "alerts.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    longest_run = warm_up_seconds + plan.lead_in_seconds + plan.attack_seconds + 600
    with ExitStack() as running:
        service.start(timeout=120)
        running.callback(service.stop)
        wait_for(lambda: len(_worker_pids(service)) == WORKERS, 120, "all workers serving")
        sender = Sender(service.port)
        running.callback(sender.stop)
        sender.start(normal_schedule(plan, longest_run, rng), time.time())

        before = fetch(service.url + "/metrics")[1].decode()
        measured_from = time.monotonic()
        time.sleep(warm_up_seconds)  # a measurement of the normal rates, not a wait
        after = fetch(service.url + "/metrics")[1].decode()
        rates = measure_rates(
            before, after, time.monotonic() - measured_from, referenced_metrics(rules)
        )

        history_end = time.time() - HISTORY_GAP_SECONDS
        history_start = history_end - longest_history_seconds(rules) - 300
        webhook = running.enter_context(Webhook())
        alertmanager = Alertmanager(
            workdir, project / "monitoring/alertmanager/alertmanager.yml", webhook
        )
        running.enter_context(alertmanager.start())
        prometheus = Prometheus(
            workdir,
            prometheus_config(
                job, f"127.0.0.1:{service.port}", rules_file, f"127.0.0.1:{alertmanager.port}"
            ),
        )
        labels = {"job": job, "instance": INSTANCE}
        history = history_openmetrics(rates, labels, history_start, history_end, rng)
        write_history(
            prometheus.workdir / "data",
            workdir,
            rules,
            rules_file,
            history,
            history_start,
            history_end,
        )
        running.enter_context(prometheus.start())
        wait_for(lambda: prometheus.query(f'up{{job="{job}"}} == 1'), 120, "the first scrape")

        lead_in_started = time.time()
        attacks_started = lead_in_started + plan.lead_in_seconds
        sender.start(attack_schedule(plan), attacks_started)
        attacks_end = attacks_started + plan.attack_seconds

        def judged() -> list:
            events = security_log_events(log_file)
            return judge_episodes(plan, attacks_started, events, webhook.firing(), defined)

        def all_detected() -> bool:
            return time.time() > attacks_end and all(
                result.detected for result in judged() if result.watched
            )

        _wait_until(all_detected, attacks_end + ALERT_GRACE_SECONDS)
        ended = time.time()
        memory = _memory_kb(service)
        sender.stop()
        results = judged()
        events = security_log_events(log_file)
        alerts = webhook.firing()
    return Outcome(
        plan=plan,
        episodes=results,
        false_positives=normal_false_positives(plan, lead_in_started, ended, events),
        quiet_alerts=[alert for alert in alerts if alert.received < attacks_started],
        other_alerts=[
            alert
            for alert in alerts
            if alert.received >= attacks_started
            and not any(is_expected(alert.labels, expected) for expected in EXPECTED.values())
        ],
        requests=_request_figures(sender),
        memory_kb=memory,
        seconds=time.time() - began,
    )


def project_rules(project: Path) -> dict:
    return yaml.safe_load((project / "monitoring/prometheus/alerts.yml").read_text())


def detectable_kinds(project: Path) -> tuple[str, ...]:
    """The attack kinds that an alert of the project's rules is meant to detect."""
    defined = alert_names(project_rules(project))
    return tuple(kind for kind in EXPECTED if expected_of(kind, defined).alerts)


def _wait_until(condition, deadline: float) -> bool:
    """Until `condition` holds or the wall clock passes `deadline`: missed detections are
    a result to report here, not a failure."""
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.5)
    return True


def _job(project: Path) -> str:
    prometheus_yml = yaml.safe_load((project / "monitoring/prometheus/prometheus.yml").read_text())
    return prometheus_yml["scrape_configs"][0]["job_name"]


def _worker_pids(service: BakedService) -> set[str]:
    text = fetch(service.url + "/metrics")[1].decode()
    return {
        line.split('pid="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("process_worker_resident_memory_bytes{")
    }


def _memory_kb(service: BakedService) -> dict:
    def rss(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    return {
        "master": rss(service.process.pid),
        "workers": [rss(pid) for pid in service.worker_pids()],
    }


def _request_figures(sender: Sender) -> dict:
    lags = sorted(sent.lag for sent in sender.sent)
    return {
        "sent": len(sender.sent),
        "unanswered": sum(sent.status is None for sent in sender.sent),
        "lag_p99": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
        "lag_max": lags[-1] if lags else 0.0,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:6.1f} s"


def report(outcome: Outcome) -> str:
    lines = [
        f"{'kind':<20} {'ep':>3} {'clients':>7} {'log event':>10} {'named':>6} "
        f"{'alert':>9}  {'detected':<8} alert at the webhook"
    ]
    for result in outcome.episodes:
        episode = result.episode
        detected = "yes" if result.detected else ("no" if result.watched else "no rule")
        named = f"{result.clients_named}/{len(episode.clients)}"
        lines.append(
            f"{episode.kind:<20} {result.number:>3} {len(episode.clients):>7} "
            f"{_seconds(result.log_seconds):>10} {named:>6} "
            f"{_seconds(result.alert_seconds):>9}  {detected:<8} {result.alert}"
        )
    lines.append("")
    by_kind: dict[str, list] = {}
    for result in outcome.episodes:
        by_kind.setdefault(result.episode.kind, []).append(result)
    for kind, results in by_kind.items():
        found = [result for result in results if result.detected]
        log_times = [r.log_seconds for r in found if r.log_seconds is not None]
        alert_times = [r.alert_seconds for r in found if r.alert_seconds is not None]
        median_log = _seconds(statistics.median(log_times)) if log_times else "-"
        median_alert = _seconds(statistics.median(alert_times)) if alert_times else "-"
        lines.append(
            f"{kind:<20} detected {len(found)}/{len(results)}, median log "
            f"{median_log.strip()}, median alert {median_alert.strip()}"
        )
    watched = [result for result in outcome.episodes if result.watched]
    detected = sum(result.detected for result in watched)
    lines.append(
        f"attack episodes detected: {detected}/{len(watched)} "
        f"({100 * detected / max(1, len(watched)):.0f} %) of those with a detector"
    )
    fp = outcome.false_positives
    lines.append(
        f"normal clients: {len(outcome.plan.normal_clients)}, "
        f"(client, {outcome.plan.window_seconds:g} s window) pairs {fp.pairs}, "
        f"flagged {len(fp.flagged)} ({100 * fp.share:.2f} %)"
    )
    quiet = sorted({alert.labels["alertname"] for alert in outcome.quiet_alerts})
    other = sorted({alert_text(alert.labels) for alert in outcome.other_alerts})
    lines.append(
        f"alerts during the normal lead-in: {quiet or 'none'}; "
        f"other alerts during the attacks (no kind's own): {other or 'none'}"
    )
    requests = outcome.requests
    lines.append(
        f"requests: {requests['sent']} sent, {requests['unanswered']} unanswered, "
        f"sending lag p99 {requests['lag_p99']:.3f} s, max {requests['lag_max']:.3f} s"
    )
    memory = outcome.memory_kb
    lines.append(
        f"memory (RSS): master {memory['master'] / 1024:.0f} MB, workers "
        + ", ".join(f"{kb / 1024:.0f}" for kb in memory["workers"])
        + " MB; "
        f"run {outcome.seconds:.0f} s"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--normal-clients", type=int, default=40)
    parser.add_argument("--lead-in", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--python", type=Path, help="a Python with the service's dependencies")
    parser.add_argument("--project", type=Path, help="a baked default project, instead of a bake")
    options = parser.parse_args()
    from .environment import TEMPLATE_DIR, bake, ensure_venv

    python = options.python or ensure_venv(TEMPLATE_DIR)
    plan = make_plan(options.normal_clients, options.rounds, options.lead_in)
    with tempfile.TemporaryDirectory(prefix="attacks-") as scratch:
        workdir = Path(scratch)
        project = options.project or bake(TEMPLATE_DIR, {}, workdir / "bake")
        outcome = run_mix(python, project, workdir / "run", plan, options.seed)
    print(report(outcome))


if __name__ == "__main__":
    main()
