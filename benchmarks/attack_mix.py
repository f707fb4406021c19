"""The scripted traffic of the attack benchmark: normal users and attacks, from distinct
addresses, sent on a wall-clock schedule; and what the service made of it.

Every client has an address of its own: Linux routes all of 127.0.0.0/8 to loopback, so a
client that binds its socket to 127.0.N.M is, to the service, a different host. The
schedule is open loop: requests leave at their planned times whatever the service does,
so the figures do not depend on how fast this machine is.
"""

import http.client
import json
import random
import secrets
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Expected:
    """How an attack kind is detected: a log event naming an attacking client (one of
    `log_actions`), and one of `alerts` (name and labels) firing at the webhook."""

    log_actions: tuple[str, ...]
    alerts: tuple[tuple[str, dict[str, str]], ...]


# Attack kind -> what should detect it. The per-client thresholds name the client in the log;
# the baseline alert sees events that no single client makes many of.
EXPECTED = {
    "credential_stuffing": Expected(
        ("authn_login_fail_max",),
        (("SecurityThresholdCrossed", {"action": "authn_login_fail_max"}),),
    ),
    "walk_404": Expected(
        ("malicious_excess_404",),
        (("SecurityThresholdCrossed", {"action": "malicious_excess_404"}),),
    ),
    "path_scan": Expected(
        ("malicious_direct_reference",),
        (("SecurityEventsAboveBaseline", {"action": "malicious_direct_reference"}),),
    ),
    # Control characters (log injection), which gunicorn refuses before the app; the
    # episode's oversized request ids (input_validation_fail) come on top.
    "hostile_headers": Expected(
        ("malicious_extraneous",),
        (("SecurityEventsAboveBaseline", {"action": "malicious_extraneous"}),),
    ),
    # A burst of ordinary requests records no security event: the request rate against its
    # baseline is what sees it.
    "request_burst": Expected((), (("RequestRateAboveBaseline", {}),)),
}

API_TOKEN = "normal-users-know-this-token"
KNOWN_ITEMS = 1000  # /api/items/<id> answers 404 above this (views.py)
PROBED = [
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/phpmyadmin/",
    "/server-status",
    "/actuator/env",
    "/.aws/credentials",
    "/xmlrpc.php",
    "/.env.production",
    "/wp-admin/setup-config.php",
    "/cgi-bin/luci",
    "/.ssh/id_rsa",
]
WALKED = [
    "admin",
    "backup",
    "old",
    "test",
    "login",
    "config",
    "uploads",
    "private",
    "tmp",
    "dev",
    "staging",
    "api/v1",
    "api/v2",
    "console",
    "dashboard",
    "static/js",
]
# Normal users: what they ask for, and how often. A few stale links (404) and mistyped tokens.
NORMAL_REQUESTS = [
    ("item", 0.55),
    ("index", 0.30),
    ("private", 0.12),
    ("stale_link", 0.02),
    ("mistyped_token", 0.01),
]


@dataclass(frozen=True)
class Request:
    at: float  # seconds after its schedule starts
    client: str
    path: str
    headers: dict[str, str]
    episode: int | None  # None: a normal user's


@dataclass(frozen=True)
class Episode:
    kind: str
    start: float  # seconds after the attacks begin
    seconds: float
    clients: tuple[str, ...]
    rate: float  # requests a second, from each client


@dataclass(frozen=True)
class Plan:
    normal_clients: tuple[str, ...]
    normal_rate: float  # requests a second, from each normal client
    lead_in_seconds: float  # normal traffic alone, before the first attack
    episodes: tuple[Episode, ...]
    window_seconds: float = 30.0  # a normal client's window, for the false-positive share

    @property
    def attack_seconds(self) -> float:
        return max(episode.start + episode.seconds for episode in self.episodes)


# Each attack kind's episode: seconds, clients, requests a second from each client.
EPISODE_SHAPES = {
    "credential_stuffing": (15, 5, 1.0),
    "walk_404": (12, 1, 3.0),
    "path_scan": (35, 1, 2.0),
    "hostile_headers": (35, 1, 2.0),
    "request_burst": (35, 4, 8.0),
}
# Kinds that never share an alert, run side by side in the sequential plan.
STAGES = (("credential_stuffing", "walk_404"), ("path_scan", "hostile_headers"), ("request_burst",))
RESOLVE_SECONDS = 25  # between stages: the last stage's alerts resolve (20 s windows, scaled)


def make_plan(
    normal_clients: int,
    rounds: int,
    lead_in_seconds: float,
    normal_rate: float = 0.5,
    kinds: tuple[str, ...] = tuple(EXPECTED),
    together: bool = False,
) -> Plan:
    """`rounds` times each attack kind of `kinds`: in STAGES, one after the other, or
    `together`, all at once (quicker; each kind is still told by its own alert, and by the
    log events that name its own clients)."""
    clients = tuple(f"127.0.1.{number}" for number in range(1, normal_clients + 1))
    stages = [tuple(kinds)] if together else [stage for stage in STAGES]
    episodes: list[Episode] = []
    start = 0.0
    for _ in range(rounds):
        for stage in stages:
            stage_kinds = [kind for kind in stage if kind in kinds]
            for kind in stage_kinds:
                seconds, count, rate = EPISODE_SHAPES[kind]
                subnet = 10 + len(episodes)  # every episode from addresses of its own
                addresses = tuple(f"127.0.{subnet}.{number}" for number in range(1, count + 1))
                episodes.append(Episode(kind, start, seconds, addresses, rate))
            if stage_kinds:
                start += max(EPISODE_SHAPES[kind][0] for kind in stage_kinds) + RESOLVE_SECONDS
    return Plan(clients, normal_rate, lead_in_seconds, tuple(episodes))


def normal_schedule(plan: Plan, seconds: float, rng: random.Random) -> list[Request]:
    """Each normal user at `normal_rate` on average, at random moments (a Poisson process)."""
    requests = []
    for client in plan.normal_clients:
        moment = rng.expovariate(plan.normal_rate)
        while moment < seconds:
            what = rng.choices(*zip(*NORMAL_REQUESTS, strict=True))[0]
            requests.append(Request(moment, client, *_normal_request(what, rng), None))
            moment += rng.expovariate(plan.normal_rate)
    return sorted(requests, key=lambda request: request.at)


def _normal_request(what: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    if what == "item":
        return f"/api/items/{rng.randint(1, KNOWN_ITEMS)}", {}
    if what == "index":
        return "/", {}
    if what == "stale_link":
        return f"/api/items/{rng.randint(KNOWN_ITEMS + 1, 9999)}", {}
    token = API_TOKEN if what == "private" else API_TOKEN[:-1] + "X"
    return "/api/private", {"Authorization": f"Bearer {token}"}


def attack_schedule(plan: Plan) -> list[Request]:
    requests = []
    for number, episode in enumerate(plan.episodes):
        for position, client in enumerate(episode.clients):
            count = int(episode.seconds * episode.rate)
            for index in range(count):
                # Clients of an episode start a little apart, as machines of a botnet would.
                at = episode.start + (index + position / len(episode.clients)) / episode.rate
                path, headers = _attack_request(episode.kind, index, position, plan)
                requests.append(Request(at, client, path, headers, number))
    return sorted(requests, key=lambda request: request.at)


def _attack_request(kind: str, index: int, position: int, plan: Plan) -> tuple[str, dict]:
    if kind == "credential_stuffing":
        headers = {"Authorization": f"Bearer {secrets.token_hex(8)}"}
        if position == 0:  # claims to be a normal user: at 0 trusted hops, it neither hides
            headers["X-Forwarded-For"] = plan.normal_clients[0]  # nor frames that user
        return "/api/private", headers
    if kind == "walk_404":
        word = WALKED[index % len(WALKED)]
        return (f"/{word}" if index < len(WALKED) else f"/{word}/{index}"), {}
    if kind == "path_scan":
        return PROBED[index % len(PROBED)], {}
    if kind == "hostile_headers":
        if index % 2:  # log injection: gunicorn itself refuses control characters
            return "/", {"User-Agent": "Mozilla/5.0\x1b[2J\x1b[1;1H forged line"}
        return "/", {"X-Request-ID": "<script>alert(1)</script>" + "A" * 200}
    if kind == "request_burst":
        return f"/api/items/{index % KNOWN_ITEMS + 1}", {}
    raise ValueError(f"unknown attack kind {kind!r}")


# --- sending ------------------------------------------------------------------------------


@dataclass
class Sent:
    lag: float  # seconds after its planned time that it left
    status: int | None  # None: no answer (refused, timed out)


@dataclass
class Sender:
    """Sends schedules to the service, each from its start time, on a pool of threads."""

    port: int
    threads: int = 48
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="client")
        self._stopping = threading.Event()
        self._schedules: list[threading.Thread] = []

    def start(self, schedule: list[Request], started: float) -> None:
        """Send `schedule` in a thread of its own; `started` is its time 0 (time.time())."""
        thread = threading.Thread(target=self._run, args=(schedule, started), daemon=True)
        self._schedules.append(thread)
        thread.start()

    def _run(self, schedule: list[Request], started: float) -> None:
        for request in schedule:
            delay = started + request.at - time.time()
            if self._stopping.wait(max(0.0, delay)):
                return
            self._pool.submit(self._send, request, started + request.at)

    def _send(self, request: Request, planned: float) -> None:
        lag = time.time() - planned
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(request.client, 0)
        )
        try:
            connection.request("GET", request.path, headers=request.headers)
            response = connection.getresponse()
            response.read()
            self.sent.append(Sent(lag, response.status))
        except (OSError, http.client.HTTPException):
            self.sent.append(Sent(lag, None))
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._schedules:
            thread.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- what the service made of it -----------------------------------------------------------


@dataclass(frozen=True)
class LogEvent:
    at: float  # wall-clock seconds
    action: str
    kind: str  # event.kind: "alert" for the signs of an attack
    client: str


def security_log_events(log_file: Path) -> list[LogEvent]:
    events = []
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "event.action" in record and "client.ip" in record:
            moment = datetime.fromisoformat(record["@timestamp"]).timestamp()
            events.append(
                LogEvent(moment, record["event.action"], record["event.kind"], record["client.ip"])
            )
    return events


def alert_started(starts_at: str) -> float:
    """Alertmanager's startsAt (RFC 3339, up to nanoseconds) as wall-clock seconds."""
    stamp = starts_at.replace("Z", "+00:00")
    if "." in stamp:  # datetime takes 6 digits of fraction at most
        whole, _, rest = stamp.partition(".")
        digits = "".join(char for char in rest if char.isdigit())
        stamp = f"{whole}.{digits[:6]}{rest[len(digits) :]}"
    return datetime.fromisoformat(stamp).timestamp()


@dataclass
class EpisodeResult:
    number: int
    episode: Episode
    started: float  # wall clock
    expected: Expected  # of its kind, the alerts limited to those the rules define
    log_seconds: float | None = None
    clients_named: int = 0
    alert_seconds: float | None = None
    alert: str = ""

    @property
    def watched(self) -> bool:
        """Whether the rules have an alert for this kind: without one it cannot be detected."""
        return bool(self.expected.alerts)

    @property
    def detected(self) -> bool:
        logged = self.log_seconds is not None or not self.expected.log_actions
        alerted = self.alert_seconds is not None or not self.expected.alerts
        return self.watched and logged and alerted


def expected_of(kind: str, defined_alerts: set[str]) -> Expected:
    """What should detect `kind`, among the alerts that the rules define."""
    expected = EXPECTED[kind]
    alerts = tuple(alert for alert in expected.alerts if alert[0] in defined_alerts)
    return Expected(expected.log_actions, alerts)


def judge_episodes(
    plan: Plan, started: float, events: list[LogEvent], alerts: Iterable, defined_alerts: set[str]
) -> list[EpisodeResult]:
    """Each episode's first log event naming one of its clients, and first expected alert at
    the webhook that became active after the episode began (not one still on from before)."""
    alerts = list(alerts)
    results = []
    for number, episode in enumerate(plan.episodes):
        expected = expected_of(episode.kind, defined_alerts)
        result = EpisodeResult(number, episode, started + episode.start, expected)
        naming = [
            event
            for event in events
            if event.action in expected.log_actions
            and event.client in episode.clients
            and event.at >= result.started
        ]
        if naming:
            result.log_seconds = min(event.at for event in naming) - result.started
            result.clients_named = len({event.client for event in naming})
        matching = [
            alert
            for alert in alerts
            if is_expected(alert.labels, expected)
            and alert_started(alert.starts_at) >= result.started - 1
        ]
        if matching:
            first = min(matching, key=lambda alert: alert.received)
            result.alert_seconds = first.received - result.started
            result.alert = alert_text(first.labels)
        results.append(result)
    return results


def alert_text(labels: dict) -> str:
    """An alert's name, and its action if it has one."""
    action = labels.get("action")
    return labels["alertname"] + (f"{{action={action}}}" if action else "")


def is_expected(labels: dict, expected: Expected) -> bool:
    return any(
        labels.get("alertname") == name and wanted.items() <= labels.items()
        for name, wanted in expected.alerts
    )


@dataclass(frozen=True)
class FalsePositives:
    pairs: int  # (normal client, window) pairs
    flagged: set[tuple[str, int]]  # those with an alert line naming the client

    @property
    def share(self) -> float:
        return len(self.flagged) / self.pairs if self.pairs else 0.0


def normal_false_positives(
    plan: Plan, started: float, ended: float, events: list[LogEvent]
) -> FalsePositives:
    """Over the normal clients' windows from `started` to `ended`: those in which a log line
    of kind "alert" named the client."""
    windows = max(1, int((ended - started) // plan.window_seconds))
    normal = set(plan.normal_clients)
    flagged = {
        (event.client, min(windows - 1, int((event.at - started) // plan.window_seconds)))
        for event in events
        if event.kind == "alert" and event.client in normal and started <= event.at <= ended
    }
    return FalsePositives(len(normal) * windows, flagged)
