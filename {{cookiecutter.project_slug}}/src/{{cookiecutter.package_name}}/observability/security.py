"""Security events: what attacks on the service look like, logged and counted.

A security event is a log record named from the OWASP Application Logging Vocabulary
(`event.action`: authn_login_fail, authz_fail, ...) with Elastic Common Schema fields
(`event.kind`, `event.category`, `event.type`, `event.outcome`, `event.reason`), the client
address (`client.ip`) and, when known, the user (`user.name`); like every line of a
request, it carries the request id and trace id. Each event is also sent as the
`security_event_recorded` signal, which the metrics count by action alone: never by client
or path, so that no request can add a series.

With no code of yours, the service records:
- answers 401 (authn_login_fail), 403 (authz_fail), 400, 405, 413 and 422
  (input_validation_fail), unless the view recorded an event of its own;
- a request for a path that scanners probe (`/.env`, `/.git/config`, `/wp-login.php`, ...)
  and no route serves (malicious_direct_reference);
- a header with control characters (malicious_extraneous), and an X-Request-ID that
  request_context.py refuses (input_validation_fail); under gunicorn, which refuses such
  headers itself before the app sees them, what it refuses (security_refusals.py);
- per client, many 404 answers or failed logins within a window (malicious_excess_404,
  authn_login_fail_max), counted over all gunicorn workers (security_thresholds.py).

Your code records its own with `security_event("authn_login_fail", user=name)`.

The client is the socket's peer or, with TRUSTED_PROXY_HOPS=N, the Nth address from the
right of X-Forwarded-For (werkzeug's ProxyFix): each trusted proxy appends the address it
was reached from, so what a client writes into the header itself stays further left and is
never taken.
"""

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

from blinker import Namespace
from flask import Flask, Response, current_app, g, request
from loguru import logger
from werkzeug.middleware.proxy_fix import ProxyFix

from ..settings import Settings, current_settings
from .health import polled_paths
from .request_context import REQUEST_ID_HEADER, SAFE_REQUEST_ID
from .security_refusals import record_refusals
from .security_thresholds import (
    UNKNOWN_CLIENT,
    Crossing,
    ObservationListener,
    ObservationSender,
    Threshold,
    ThresholdDetector,
)
from .server_hooks import ServerHooks

if TYPE_CHECKING:  # gunicorn's types, for type checkers only
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

# Sent with the action of every security event recorded (metrics count them).
security_event_recorded = Namespace().signal("security-event-recorded")


@dataclass(frozen=True)
class Categorisation:
    kind: str  # event.kind: "alert" where the event is the sign of an attack
    category: tuple[str, ...]
    type: tuple[str, ...]
    outcome: str


# The events this service records: the OWASP names, with their ECS categorisation. Add the
# ones your code needs; a name that is not here is refused, which keeps the metric's labels few.
VOCABULARY = {
    "authn_login_success": Categorisation("event", ("authentication",), ("start",), "success"),
    "authn_login_fail": Categorisation("event", ("authentication",), ("start",), "failure"),
    "authn_login_fail_max": Categorisation(
        "alert", ("authentication", "intrusion_detection"), ("info",), "failure"
    ),
    "authn_login_lock": Categorisation("event", ("authentication", "iam"), ("user",), "success"),
    "authz_fail": Categorisation("event", ("web",), ("access",), "failure"),
    "input_validation_fail": Categorisation("event", ("web",), ("error",), "failure"),
    "malicious_direct_reference": Categorisation(
        "alert", ("intrusion_detection",), ("denied",), "failure"
    ),
    "malicious_excess_404": Categorisation("alert", ("intrusion_detection",), ("info",), "unknown"),
    "malicious_extraneous": Categorisation("alert", ("intrusion_detection",), ("info",), "unknown"),
}
EVENT_OF_ANSWER = {
    400: "input_validation_fail",
    401: "authn_login_fail",
    403: "authz_fail",
    405: "input_validation_fail",
    413: "input_validation_fail",
    422: "input_validation_fail",
}
# Paths that scanners try on every server, looking for secrets and admin pages.
PROBED_PATHS = re.compile(
    r"/(\.env(\.[\w.-]+)?|\.git/.*|\.aws/credentials|\.ssh/.*|wp-login\.php|wp-admin(/.*)?"
    r"|xmlrpc\.php|phpmyadmin(/.*)?|server-status|actuator(/.*)?|cgi-bin/.*)",
    re.IGNORECASE,
)
# Tab is allowed in a header value; no other control character is ever sent by a real client.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A login form's user name is the attacker's to choose: enough to recognise, not a flood.
MAX_USER_NAME = 256
# What the thresholds count: a 404 answer, a failed login.
NOT_FOUND = "http_404"
LOGIN_FAIL = "authn_login_fail"


class Observations(Protocol):
    def observe(self, kind: str, client: str) -> None: ...


class ObservationsAddress:
    """Where the workers send their observations: set in the gunicorn master, inherited by
    the workers it forks."""

    def __init__(self) -> None:
        self.address: str | None = None


OBSERVATIONS_ADDRESS = ObservationsAddress()


def init_security_monitoring(app: Flask, settings: Settings) -> None:
    if settings.trusted_proxy_hops:
        # ProxyFix's default trusts one hop of X-Forwarded-Proto too: only the client is wanted.
        client_from_proxies = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=0)
        app.wsgi_app = client_from_proxies  # type: ignore[method-assign]
    app.extensions["security"] = _observations(app, settings)
    app.before_request(_check_headers)
    app.after_request(_check_answer)


def security_event(action: str, *, user: str | None = None, reason: str = "") -> None:
    """Record a security event of the request being handled: logged, counted and, for a
    failed login, counted against the client's threshold. The automatic event of the answer
    (a 401 after a failed login, say) is then left out, so that the request counts once."""
    _record(action, reason, user)
    g.security_event_by_view = True


def client_address() -> str:
    """The client of the request being handled, as far as the trusted proxies tell (ProxyFix
    has set remote_addr): for code of yours that needs the client the events name."""
    # A proxy may have written something else than an address: that client is unknown.
    return _address(request.remote_addr or "")


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return UNKNOWN_CLIENT


def thresholds(settings: Settings) -> dict[str, Threshold]:
    """The per-client thresholds, by what they count. The alerts and panels on crossed
    thresholds name the events these log: a threshold added here needs its event there too."""
    return {
        NOT_FOUND: Threshold(
            "malicious_excess_404",
            "404 answers",
            settings.security_404_limit,
            settings.security_404_window_seconds,
        ),
        LOGIN_FAIL: Threshold(
            "authn_login_fail_max",
            "failed logins",
            settings.security_login_fail_limit,
            settings.security_login_fail_window_seconds,
        ),
    }


def _log(action: str, reason: str, client: str, **fields: object) -> None:
    """One log record with the event's ECS fields; `fields` add to them."""
    categorisation = VOCABULARY[action]
    logger.bind(
        **{
            "event.kind": categorisation.kind,
            "event.category": list(categorisation.category),
            "event.type": list(categorisation.type),
            "event.outcome": categorisation.outcome,
            "event.action": action,
            "event.reason": reason,
            "client.ip": client,
            **fields,
        }
    ).warning("security {} {} from {}: {}", categorisation.kind, action, client, reason)


def _log_crossing(crossing: Crossing) -> None:
    threshold = crossing.threshold
    reason = f"{crossing.count} {threshold.counted} within {threshold.window_seconds:g} s"
    _log(threshold.alert, reason, crossing.client)


def _record(
    action: str, reason: str, user: str | None = None, header_names: list[str] | None = None
) -> None:
    if action not in VOCABULARY:
        raise ValueError(f"{action!r} is not in the security vocabulary (security.VOCABULARY)")
    client = client_address()
    fields: dict[str, object] = {"http.request.method": request.method, "url.path": request.path}
    if user is not None:
        fields["user.name"] = user[:MAX_USER_NAME]
    if header_names:
        fields["http.request.header_names"] = header_names
    _log(action, reason, client, **fields)
    security_event_recorded.send(current_app._get_current_object(), action=action)  # type: ignore[attr-defined]
    if action == LOGIN_FAIL:
        current_app.extensions["security"].observe(LOGIN_FAIL, client)


def _check_headers() -> None:
    # The names go into a field, never into the message: a text log line shows messages only.
    hostile = sorted(
        name for name, value in request.headers.items() if CONTROL_CHARACTERS.search(value)
    )
    if hostile:
        _record("malicious_extraneous", "control characters in a header", header_names=hostile)
        return
    request_id = request.headers.get(REQUEST_ID_HEADER)
    if request_id and not SAFE_REQUEST_ID.match(request_id):
        _record("input_validation_fail", f"{REQUEST_ID_HEADER} refused and replaced")


def _check_answer(response: Response) -> Response:
    status = response.status_code
    if request.url_rule is None and PROBED_PATHS.fullmatch(request.path):
        _record("malicious_direct_reference", "a path that scanners probe")
    action = EVENT_OF_ANSWER.get(status)
    if action and not g.get("security_event_by_view"):
        _record(action, f"answered {status} {HTTPStatus(status).phrase}")
    # A 404 on a path that machines poll is a scraper or probe pointed at the wrong port, no scan.
    if status == HTTPStatus.NOT_FOUND and request.path not in polled_paths(current_app):
        current_app.extensions["security"].observe(NOT_FOUND, client_address())
    return response


def _observations(app: Flask, settings: Settings) -> Observations:
    """Under gunicorn, the master's detector; otherwise one of the app's own."""
    if OBSERVATIONS_ADDRESS.address is not None:
        return ObservationSender(OBSERVATIONS_ADDRESS.address)

    def alert(crossing: Crossing) -> None:
        _log_crossing(crossing)
        security_event_recorded.send(app, action=crossing.threshold.alert)

    return ThresholdDetector(thresholds(settings), settings.security_tracked_clients, alert)


class SecurityThresholds(ServerHooks):
    """In the gunicorn master: one detector for the observations of all workers. Its
    thresholds are those of the start; a HUP does not change them."""

    def __init__(self, count_alert: Callable[[str], None] = lambda _action: None) -> None:
        self._count_alert = count_alert

    def on_starting(self, server: "Arbiter") -> None:
        settings = current_settings()
        detector = ThresholdDetector(
            thresholds(settings), settings.security_tracked_clients, self._alert
        )
        OBSERVATIONS_ADDRESS.address = ObservationListener(detector).address

    def _alert(self, crossing: Crossing) -> None:
        _log_crossing(crossing)
        self._count_alert(crossing.threshold.alert)

    def post_worker_init(self, worker: "Worker") -> None:
        """Requests that gunicorn refuses before the app sees them are events too."""
        app = worker.wsgi

        def record(action: str, reason: str, peer: str) -> None:
            # Behind trusted proxies the peer is a proxy, and X-Forwarded-For was never read.
            hops = current_settings().trusted_proxy_hops
            _log(action, reason, UNKNOWN_CLIENT if hops else _address(peer))
            security_event_recorded.send(app, action=action)

        record_refusals(worker, record)
