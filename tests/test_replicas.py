"""The dashboard and the alerts over several pods, as a Prometheus of the Prometheus Operator
sees them.

Three instances of the default project run under gunicorn (two workers each), and one real
Prometheus scrapes them as one job, each target with the labels a ServiceMonitor gives a pod
(`job` the Service's name, `pod`, `namespace`, `service`, `endpoint`, `instance`), evaluating
the project's own alerts.yml. Each pod gets a known mix of requests; then every query of the
dashboard, the recording rules and the alerts are evaluated over that traffic:

- an aggregate (a query whose legend names no pod) has no `instance` or `pod` label, and its
  value is the one over all the pods: totals are the sum of what was sent, ratios the overall
  ratio, not an average of the pods' ratios;
- a per-pod query (its legend names the instance) has one series per running pod.

Then one pod stops (SIGTERM, as Kubernetes stops it) and the rest get more traffic, an error
burst on one of them: the aggregates cover the running pods alone and still answer, the
TargetDown alert names the stopped pod, and the error alerts fire for the job.

Rates are checked against what was sent within the bounds of Prometheus' extrapolation:
rate() stretches the increase between a window's first and last samples to the window's
edges, at most about one scrape interval at each end. So a rate times its window lies between
the count sent and the count times window / (window - 2.5 scrape intervals).
"""

import datetime
import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
import yaml

from harness.loopback import fetch, wait_for

from .prometheus import Prometheus
from .service import GunicornService

pytestmark = pytest.mark.xdist_group("replicas")  # the tests share their pods, in this order

PODS = 3
WORKERS = 2
SCRAPE_SECONDS = 0.5
# The requests of a phase are spread over this long at least, so that its window is long beside
# the scrape interval, which bounds how far rate() may stretch a count (see rate_bounds).
PHASE_SECONDS = 10.0
WAIT_SECONDS = 120.0  # a bound for a stuck test on a busy machine
NAMESPACE = "shop"
# What each request path is counted as.
REQUESTS = {
    "/": {"url_rule": "/", "status": "200"},
    "/api/items/1": {"url_rule": "/api/items/<int:item_id>", "status": "200"},
    "/api/items/5000": {"url_rule": "/api/items/<int:item_id>", "status": "404"},
    "/api/private": {"url_rule": "/api/private", "status": "401", "action": "authn_login_fail"},
    "/api/fail": {"url_rule": "/api/fail", "status": "500", "exception_type": "RuntimeError"},
}
# Pods with unlike traffic: the sum differs from the largest pod or their average, and the
# overall 5xx ratio (1 in 132, below every alert's threshold) from the average of the pods'
# ratios (0, 0 and 1 in 9: 3.7 %).
MIX = {
    0: {"/api/items/1": 60, "/api/items/5000": 10, "/api/private": 5},
    1: {"/": 30, "/api/items/1": 15, "/api/items/5000": 3},
    2: {"/api/items/1": 8, "/api/fail": 1},
}
# With pod 2 stopped: a burst of errors on pod 1 alone, 25 in 80 requests over the pods.
BURST = {0: {"/api/items/1": 40, "/": 10}, 1: {"/api/items/1": 5, "/api/fail": 25}}
ERROR_ALERTS = {"HighErrorRatio", "ErrorBudgetBurnFast"}


@dataclass
class Pod:
    name: str
    service: GunicornService

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.service.port}"


@dataclass
class Window:
    """The requests sent between two times, by (pod, path)."""

    start: float
    end: float = 0.0
    sent: Counter = field(default_factory=Counter)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def count(self, **labels: str) -> int:
        """Requests whose counted labels include these."""
        return sum(n for (_, path), n in self.sent.items()
                   if labels.items() <= REQUESTS[path].items())  # fmt: skip

    def by(self, *names: str, **labels: str) -> dict[frozenset, int]:
        """Requests counted by the labels `names`, of those that have them and `labels`."""
        counts: Counter = Counter()
        for (_, path), n in self.sent.items():
            counted = REQUESTS[path]
            if set(names) <= counted.keys() and labels.items() <= counted.items():
                counts[frozenset((name, counted[name]) for name in names)] += n
        return dict(counts)

    def error_ratio(self) -> float:
        return self.count(status="500") / self.count()


class Replicas:
    """The pods and the Prometheus that scrapes them. `sent` counts every request by (pod,
    path), `since_warm_up` those that increase() can see; `running` are the pods not stopped."""

    def __init__(self, project, workdir, running: ExitStack):
        self.job = project.answers["project_slug"]
        self.pods = [Pod(f"{self.job}-{index}", self._service(project, workdir / f"pod-{index}"))
                     for index in range(PODS)]  # fmt: skip
        for pod in self.pods:
            pod.service.start()
            running.callback(pod.service.stop)
        alerts = project.path / "monitoring" / "prometheus" / "alerts.yml"
        self.prometheus = Prometheus(workdir, self._prometheus_config(alerts))
        self.prometheus.start()
        running.callback(self.prometheus.stop)
        self.running = list(self.pods)
        self.sent: Counter = Counter()
        self.since_warm_up = Window(0.0)
        self.rules = [rule for group in yaml.safe_load(alerts.read_text())["groups"]
                      for rule in group["rules"]]  # fmt: skip

    @staticmethod
    def _service(project, workdir) -> GunicornService:
        workdir.mkdir()
        return GunicornService(project, workdir, workers=WORKERS, LOG_FILE="",
                               PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"))  # fmt: skip

    def _prometheus_config(self, rules) -> dict:
        """One job, one target a pod, labelled as the Prometheus Operator labels them."""
        interval = f"{int(SCRAPE_SECONDS * 1000)}ms"
        targets = [
            {"targets": [pod.instance],
             "labels": {"pod": pod.name, "namespace": NAMESPACE, "service": self.job,
                        "endpoint": "http", "container": self.job}}
            for pod in self.pods
        ]  # fmt: skip
        return {
            "global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": self.job, "static_configs": targets}],
        }  # fmt: skip

    def send(self, traffic: dict[int, dict[str, int]], window: Window, seconds: float = 0) -> None:
        """The requests, the pods' and paths' taken in turn, spread over `seconds`; `window`
        and `sent` count them."""
        requests = interleaved([[(self.pods[index], path)] * count
                                for index, paths in traffic.items()
                                for path, count in paths.items()])  # fmt: skip
        started = time.monotonic()
        for number, (pod, path) in enumerate(requests):
            time.sleep(max(0.0, started + seconds * number / len(requests) - time.monotonic()))
            status, _body = fetch(pod.service.url + path)
            assert str(status) == REQUESTS[path]["status"], (pod.name, path, status)
            window.sent[pod.name, path] += 1
            self.sent[pod.name, path] += 1

    def warm_up(self) -> None:
        """One request of each kind to each pod, so that every series the tests count
        exists before they count: a counter's first sample is invisible to increase()."""
        self.send({index: dict.fromkeys(REQUESTS, 1) for index in range(PODS)}, Window(0.0))
        self.wait_until_scraped()
        self.since_warm_up.start = time.time()

    def wait_until_scraped(self) -> None:
        """Until Prometheus has every request sent to the running pods, exactly."""
        sent: Counter = Counter()
        for (pod, path), n in self.sent.items():
            sent[pod, REQUESTS[path]["status"]] += n
        running = {pod.name for pod in self.running}
        expected = {key: n for key, n in sent.items() if key[0] in running}
        query = f'sum by (pod, status) (flask_http_request_total{{job="{self.job}"}})'

        def scraped() -> dict:
            return {(one["metric"]["pod"], one["metric"]["status"]): int(float(one["value"][1]))
                    for one in self.prometheus.query(query)
                    if one["metric"]["pod"] in running}  # fmt: skip

        wait_for(lambda: scraped() == expected, WAIT_SECONDS,
                 what=f"Prometheus to scrape {expected}")  # fmt: skip

    def phase(self, traffic: dict[int, dict[str, int]]) -> Window:
        """Send the traffic to its pods and return its window, once Prometheus has scraped it.
        The window starts before a scrape of each running pod that precedes the traffic."""
        window = Window(time.time())
        # timestamp() of a selector alone: of anything else it gives the time of the query.
        scraped_since = f'timestamp(up{{job="{self.job}"}}) > {window.start}'
        running = {pod.name for pod in self.running}
        wait_for(lambda: running <= {one["metric"]["pod"]
                                     for one in self.prometheus.query(scraped_since)},
                 WAIT_SECONDS, what="a scrape of each running pod")  # fmt: skip
        self.send(traffic, window, PHASE_SECONDS)
        self.since_warm_up.sent.update(window.sent)
        self.wait_until_scraped()
        self.wait_for_rules()
        window.end = self.since_warm_up.end = time.time()
        return window

    def wait_for_rules(self) -> None:
        """Until every rule group has been evaluated since now: the recorded series are up
        to date."""
        now = time.time()

        def evaluated_since() -> bool:
            groups = self.prometheus.rule_groups()
            return all(rfc3339_seconds(group["lastEvaluation"]) > now for group in groups)

        wait_for(evaluated_since, WAIT_SECONDS, what="the rules evaluated")

    def stop(self, index: int) -> Pod:
        pod = self.pods[index]
        pod.service.stop()  # SIGTERM, then it waits for the master to exit
        self.running.remove(pod)
        down = f'up{{job="{self.job}", pod="{pod.name}"}} == 0'
        wait_for(lambda: self.prometheus.query(down), WAIT_SECONDS, what=f"{pod.name} down")
        return pod

    def query(self, expression: str, at: float) -> list[dict]:
        return self.prometheus.query(expression, at)

    def alerts(self) -> list[dict]:
        return self.prometheus.alerts()


def interleaved(runs: list[list]) -> list:
    """The items of the runs taken in turn: [[a, a, a], [b]] gives [a, b, a, a]."""
    return [item for turn in itertools.zip_longest(*runs) for item in turn if item is not None]


def rfc3339_seconds(text: str) -> float:
    """Seconds since the epoch of Go's 2026-11-26T16:30:01.123456789Z (or +01:00): nanoseconds,
    which Python's datetime does not read."""
    whole, fraction, offset = re.fullmatch(r"([^.]+?)(\.\d+)?(Z|[+-]\d\d:\d\d)", text).groups()
    moment = datetime.datetime.fromisoformat(whole + offset.replace("Z", "+00:00"))
    return moment.timestamp() + float(fraction or 0)


# --- what the queries should give --------------------------------------------------------------


def rate_bounds(count: float, window: Window) -> tuple[float, float]:
    """The least and most a rate over the window can be for `count` requests in it."""
    most = count * window.seconds / (window.seconds - 2.5 * SCRAPE_SECONDS)
    return count / window.seconds, most / window.seconds


def within(value: float, low: float, high: float) -> bool:
    return low * (1 - 1e-9) <= value <= high * (1 + 1e-9)


def check_rates(found: dict[frozenset, float], expected: dict[frozenset, int], window: Window):
    """Each series' rate against the count sent; series with none sent must be at 0."""
    problems = []
    for labels in found.keys() | expected.keys():
        count = expected.get(labels, 0)
        value = found.get(labels)
        if value is None or not within(value, *rate_bounds(count, window)):
            low, high = rate_bounds(count, window)
            problems.append(f"{dict(labels)}: {value}, not {low:.4g}..{high:.4g} ({count} sent)")
    return problems


def check_ratio(found: dict[frozenset, float], ratio: float, window: Window) -> list[str]:
    """A ratio of two sums over the pods: each pod's rates stretch alike, by at most the
    factor of rate_bounds, so the ratio stays within that factor of the true one."""
    low, high = rate_bounds(1, window)
    factor = high / low
    if list(found) != [frozenset()] or not within(found[frozenset()], ratio / factor,
                                                  ratio * factor):  # fmt: skip
        return [f"{found}, not one series of {ratio:.4g} (x/÷ {factor:.3g})"]
    return []


# What each panel query (title, refId) must show over a window of known traffic, all pods
# together. Other panels get the checks that apply to all: aggregate or one series a pod.
Check = Callable[[dict, Window, "Replicas"], list[str]]
PANEL_VALUES: dict[tuple[str, str], Check] = {
    ("Request rate", "A"): lambda found, w, _: check_rates(found, w.by(), w),
    ("5xx error ratio", "A"): lambda found, w, _: check_ratio(found, w.error_ratio(), w),
    ("Request rate by status", "A"): lambda found, w, _: check_rates(found, w.by(), w),
    ("Request rate by status", "B"): lambda found, w, _: check_rates(found, w.by("status"), w),
    ("Requests by endpoint", "A"): lambda found, w, _: check_rates(found, w.by("url_rule"), w),
    ("5xx by endpoint", "A"): (
        lambda found, w, _: check_rates(found, w.by("url_rule", status="500"), w)
    ),
    ("Status codes by endpoint", "A"): (
        lambda found, w, _: check_rates(found, w.by("url_rule", "status"), w)
    ),
    ("Unhandled exceptions by type", "A"): (
        lambda found, w, _: check_rates(found, w.by("exception_type", "url_rule"), w)
    ),
    ("Instances up", "A"): (
        lambda found, _, pods: [] if found == {frozenset(): len(pods.running)} else [str(found)]
    ),
    ("Requests in flight", "B"): (  # the workers of each pod
        lambda found, _, pods: [] if set(found.values()) == {WORKERS} else [str(found)]
    ),
}
# Panels whose query may draw nothing over the tests' traffic: no request timed out.
MAY_BE_EMPTY = {("Requests ended by the worker timeout", "A")}
# A baseline's band needs a day of history.
BAND = re.compile(r"_band\b")


def security_events(found: dict, window: Window, _pods) -> list[str]:
    """authn_login_fail as sent; the other actions count what the pods detect."""
    failed_logins = frozenset({("action", "authn_login_fail")})
    sent = {failed_logins: window.count(action="authn_login_fail")}
    return check_rates({failed_logins: found.get(failed_logins)}, sent, window)


def availability(found: dict, _window: Window, replicas: "Replicas") -> list[str]:
    """Over 30 days: every request since the warm-up, the stopped pod's too."""
    since = replicas.since_warm_up
    return check_ratio({labels: 1 - value for labels, value in found.items()},
                       since.error_ratio(), since)  # fmt: skip


PANEL_VALUES["Security events by action", "A"] = security_events
PANEL_VALUES["Availability, 30 days", "A"] = availability


def values(series: list[dict]) -> dict[frozenset, float]:
    return {frozenset((k, v) for k, v in one["metric"].items() if k != "__name__"):
            float(one["value"][1]) for one in series}  # fmt: skip


def pods_of(series: list[dict]) -> Counter:
    """How many series each pod (its instance) has."""
    return Counter(one["metric"].get("instance") for one in series)


# --- the dashboard ----------------------------------------------------------------------------


def grafana_regex_escape(value: str) -> str:
    """What Grafana does to a value it puts into a regex matcher of a Prometheus query."""
    return re.sub(r"[$^*{}\[\]'+?.()|\\]", lambda match: "\\\\" + match.group(), value)


def dashboard_targets(project) -> list[tuple[dict, dict]]:
    """(panel, target) of every query of the project's dashboard."""
    [path] = (project.path / "monitoring" / "grafana" / "dashboards").glob("*.json")
    dashboard = json.loads(path.read_text())
    panels = [nested for panel in dashboard["panels"]
              for nested in [panel, *panel.get("panels", [])]]  # fmt: skip
    return [(panel, target) for panel in panels for target in panel.get("targets", [])]


def grafana_variables(replicas: Replicas, window: Window) -> dict[str, str]:
    """The job and instance variables set to All, as Grafana fills them in (the instances
    Prometheus knows, the stopped one too), and $__rate_interval the window."""
    instances = replicas.prometheus.label_values(
        "instance", f'flask_exporter_info{{job="{replicas.job}"}}'
    )
    escaped = "|".join(grafana_regex_escape(instance) for instance in instances)
    return {"job": grafana_regex_escape(replicas.job), "instance": f"({escaped})",
            "__rate_interval": f"{int(window.seconds * 1000)}ms",
            "__interval": f"{int(SCRAPE_SECONDS * 1000)}ms", "__range": "5m"}  # fmt: skip


def interpolate(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: variables[match.group(1)], text)


def is_per_pod(target: dict) -> bool:
    return bool(re.search(r"\{\{\s*(instance|pod)\s*\}\}", target.get("legendFormat", "")))


def dashboard_problems(project, replicas: Replicas, window: Window) -> dict[str, list[str]]:
    """What is wrong with each dashboard query over the window, by panel and query."""
    variables = grafana_variables(replicas, window)
    running = {pod.instance for pod in replicas.running}
    problems = {}
    for panel, target in dashboard_targets(project):
        key = (panel["title"], target["refId"])
        series = replicas.query(interpolate(target["expr"], variables), window.end)
        found = values(series)
        wrong = []
        if len(found) != len(series):
            wrong.append("series with the same labels")
        if is_per_pod(target):
            if set(pods_of(series)) != running:
                wrong.append(f"one series a running pod: {sorted(pods_of(series))}")
        elif any({"instance", "pod"} & one["metric"].keys() for one in series):
            wrong.append("a series a pod where the panel means one over the pods")
        may_be_empty = key in MAY_BE_EMPTY or BAND.search(target["expr"])
        if not may_be_empty and not any(math.isfinite(value) for value in found.values()):
            wrong.append("no value")
        if key in PANEL_VALUES:
            wrong.extend(PANEL_VALUES[key](found, window, replicas))
        if wrong:
            problems[f"{key}: {target['expr']}"] = wrong
    return problems


def per_worker_problems(project, replicas: Replicas, window: Window) -> list[str]:
    """The panels of one series a worker: each running pod has its WORKERS."""
    variables = grafana_variables(replicas, window)
    problems = []
    for panel, target in dashboard_targets(project):
        if "{{pid}}" in target.get("legendFormat", "").replace(" ", ""):
            series = replicas.query(interpolate(target["expr"], variables), window.end)
            per_pod = pods_of(series)
            if per_pod != Counter({pod.instance: WORKERS for pod in replicas.running}):
                problems.append(f"{panel['title']}: {dict(per_pod)}")
    return problems


# --- the rules --------------------------------------------------------------------------------


def over_window(expression: str, window: Window) -> str:
    """The expression with each of its ranges made the window."""
    return re.sub(r"\[\d+[smhd]\]", f"[{int(window.seconds * 1000)}ms]", expression)


# What the recording rules of the requests give over a window of known traffic, by the
# names they record (a regex), the job's label aside.
RULE_VALUES: dict[str, Callable[[dict, Window], list[str]]] = {
    r"job:flask_http_request_5xx:ratio_rate\d+[mh]": (
        lambda found, w: check_ratio(found, w.error_ratio(), w)
    ),
    r"job:flask_http_request:rate5m": lambda found, w: check_rates(found, w.by(), w),
}


def recording_rule_problems(replicas: Replicas, window: Window) -> dict[str, list[str]]:
    """Every recording rule, over the window: one series for the job, never one a pod; those
    of RULE_VALUES their value over all the pods."""
    problems = {}
    for rule in replicas.rules:
        if "record" not in rule:
            continue
        series = replicas.query(over_window(rule["expr"], window), window.end)
        wrong = [f"a series of {one['metric']['instance']}"
                 for one in series if "instance" in one["metric"]]  # fmt: skip
        by_job = {labels - {("job", replicas.job)}: value
                  for labels, value in values(series).items()}  # fmt: skip
        for name, check in RULE_VALUES.items():
            if re.fullmatch(name, rule["record"]):
                wrong.extend(check(by_job, window))
        if wrong:
            problems[rule["record"]] = wrong
    return problems


def alert_expression(replicas: Replicas, name: str) -> str:
    [rule] = [rule for rule in replicas.rules if rule.get("alert") == name]
    return rule["expr"]


# --- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(baked):
    return baked("all-defaults")


@pytest.fixture(scope="module")
def replicas(project, tmp_path_factory):
    with ExitStack() as running:
        replicas = Replicas(project, tmp_path_factory.mktemp("replicas"), running)
        replicas.warm_up()
        yield replicas


def test_the_dashboard_and_rules_add_up_the_pods(project, replicas):
    window = replicas.phase(MIX)
    assert recording_rule_problems(replicas, window) == {}  # the burn-rate panels read them
    assert dashboard_problems(project, replicas, window) == {}
    assert per_worker_problems(project, replicas, window) == []
    # Every pod up: no alert about a pod; errors below the thresholds: none about them.
    for name in ("TargetDown", "MetricsAbsent", *ERROR_ALERTS):
        assert replicas.query(alert_expression(replicas, name), window.end) == [], name


def test_with_a_pod_stopped_the_aggregates_cover_the_others(project, replicas):
    stopped = replicas.stop(2)
    window = replicas.phase(BURST)
    assert recording_rule_problems(replicas, window) == {}  # the burn-rate panels read them
    assert dashboard_problems(project, replicas, window) == {}
    assert per_worker_problems(project, replicas, window) == []

    down = replicas.query(alert_expression(replicas, "TargetDown"), window.end)
    assert [(one["metric"]["pod"], one["metric"]["instance"]) for one in down] == [
        (stopped.name, stopped.instance)
    ]
    assert replicas.query(alert_expression(replicas, "MetricsAbsent"), window.end) == []

    # The burst on one pod makes the job's error alerts pending (their `for` not yet over),
    # one alert for the job, not one a pod.
    def error_alerts() -> dict[str, dict]:
        return {alert["labels"]["alertname"]: alert["labels"] for alert in replicas.alerts()
                if alert["labels"]["alertname"] in ERROR_ALERTS}  # fmt: skip

    found = wait_for(lambda: (alerts := error_alerts()).keys() == ERROR_ALERTS and alerts,
                     WAIT_SECONDS, what=f"{ERROR_ALERTS} pending")  # fmt: skip
    assert {name: labels.get("job") for name, labels in found.items()} == dict.fromkeys(
        ERROR_ALERTS, replicas.job
    )
    assert not any({"instance", "pod"} & labels.keys() for labels in found.values())
    target_down = [alert["labels"] for alert in replicas.alerts()
                   if alert["labels"]["alertname"] == "TargetDown"]  # fmt: skip
    assert [labels["pod"] for labels in target_down] == [stopped.name]
