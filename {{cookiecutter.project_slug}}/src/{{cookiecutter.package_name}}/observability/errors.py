"""Error reporting to Sentry, switched on by SENTRY_DSN.

Two ways, chosen by SENTRY_TRACES_SAMPLE_RATE:

- 0, the default: errors only, at no cost to a request that raises nothing. No Sentry
  middleware runs on requests; an unhandled exception (or a request the worker timeout
  ended) becomes one event built here, with the request, its route, its ids and the
  request's own log lines as breadcrumbs. Distributed tracing is left to a tracer of its own.
- above 0: Sentry performance tracing too, through its Flask integration, which wraps
  every request in a scope and a transaction and reports its unhandled exceptions.

Either way log records are breadcrumbs only (with logging intercepted into loguru, letting
both the logging and loguru integrations raise events would report every error twice),
without their bound fields, which may hold user data. Events are scrubbed of credentials,
cookies, tokens in query strings and the client address before they leave the process.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import sentry_sdk
from flask import Flask, g, got_request_exception, has_request_context, request
from loguru import logger
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.loguru import LoguruIntegration
from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint, SamplingContext
from sentry_sdk.utils import event_from_exception

from ..settings import Settings
from .health import polled_paths
from .logging import observe_records
from .request_context import current_request_id, current_trace_id
from .timeouts import RequestTimeout

if TYPE_CHECKING:  # loguru's types exist for type checkers only
    from loguru import Record

FILTERED = "[Filtered]"
# Matched anywhere in a lower-cased name, "-" read as "_": X-Api-Key and HTTP_X_API_KEY alike.
SENSITIVE_NAME_PARTS = (
    "auth", "cookie", "api_key", "apikey", "password", "passwd", "secret",
    "token", "session", "csrf", "signature", "private_key", "forwarded_for", "real_ip",
)  # fmt: skip
# The request's last log lines kept for its event, as many as Sentry keeps by default.
MAX_BREADCRUMBS = 100
# A body larger than this is left out of an event, as Sentry's "medium" request body size does.
MAX_BODY_BYTES = 10_000
SENTRY_LEVELS = {"WARNING": "warning", "ERROR": "error", "CRITICAL": "fatal"}


def init_error_reporting(app: Flask, settings: Settings) -> None:
    if not settings.sentry_dsn:
        logger.warning("SENTRY_DSN is not set: errors are logged but not reported to Sentry")
        return
    if settings.sentry_traces_sample_rate > 0:
        _report_errors_and_traces(app, settings)
    else:
        _report_errors_only(app, settings)
    logger.info("Sentry error reporting enabled for {}", settings.app_env)


def _client_options(settings: Settings) -> dict[str, Any]:
    return {
        "dsn": settings.sentry_dsn,
        "environment": settings.app_env,
        "release": settings.app_release,
        "include_local_variables": False,  # locals hold the WSGI environ with its raw headers
        "before_send": scrub_event,
        "shutdown_timeout": 2,
    }


def _report_errors_only(app: Flask, settings: Settings) -> None:
    """Nothing of Sentry runs on a request until one fails: no scope, no transaction, no
    session, and a log line costs one append to the request's breadcrumbs."""
    sentry_sdk.init(
        **_client_options(settings),
        # Neither the Flask nor the loguru integration, nor the others that enable themselves
        # when their library is installed. Off, rather than disabled: a disabled integration
        # stays off in the process even for a later client that asks for it (tests).
        auto_enabling_integrations=False,
        disabled_integrations=[LoggingIntegration()],
        # With no scope per request, a trace header would carry one trace id for the whole
        # process; a W3C traceparent, set by a tracer, links the services.
        trace_propagation_targets=[],
    )
    got_request_exception.connect(_report_unhandled_exception, app)
    app.teardown_request(_report_timed_out_request)
    observe_records(_keep_log_line, "INFO")


def _report_errors_and_traces(app: Flask, settings: Settings) -> None:
    sentry_sdk.init(
        **_client_options(settings),
        traces_sampler=_traces_sampler(app, settings.sentry_traces_sample_rate),
        before_send_transaction=scrub_event,
        before_breadcrumb=_without_bound_fields,
        integrations=[
            FlaskIntegration(transaction_style="url"),
            # Breadcrumbs only; no sink for Sentry's Logs product, which would format and
            # then drop every line unless enable_logs is on.
            LoguruIntegration(level=logging.INFO, event_level=None, sentry_logs_level=None),
        ],
        disabled_integrations=[LoggingIntegration()],
    )
    app.before_request(_tag_request_ids)


def _tag_request_ids() -> None:
    sentry_sdk.set_tag("request_id", current_request_id())
    sentry_sdk.set_tag("trace_id", current_trace_id())


def _without_bound_fields(crumb: Breadcrumb, _hint: BreadcrumbHint) -> Breadcrumb:
    """The loguru integration puts a line's bound fields (logger.bind) in `data`."""
    if crumb.get("type") == "log":
        crumb.pop("data", None)
    return crumb


def _traces_sampler(app: Flask, sample_rate: float) -> Callable[[SamplingContext], float]:
    """Probes and scrapes are never traced: read at each request, since the components that
    register their paths start after this one."""

    def sample(context: SamplingContext) -> float:
        path = context.get("wsgi_environ", {}).get("PATH_INFO")
        if path in polled_paths(app):
            return 0.0
        parent_sampled = context.get("parent_sampled")
        return float(parent_sampled) if parent_sampled is not None else sample_rate

    return sample


def _keep_log_line(record: Record) -> None:
    """A line logged in a request, kept until it ends."""
    if not has_request_context():
        return
    lines = g.get("sentry_log_lines")
    if lines is None:
        lines = g.sentry_log_lines = deque(maxlen=MAX_BREADCRUMBS)
    lines.append(record)


def _report_unhandled_exception(_app: Flask, exception: Exception, **_extra: object) -> None:
    _capture_request_error(exception)


def _report_timed_out_request(error: BaseException | None) -> None:
    """A RequestTimeout is a SystemExit, which Flask passes to teardown alone; every other
    error has reached got_request_exception. Its body is left out: the request may have been
    stuck reading it, and reading it again would hang the worker until it is killed."""
    if isinstance(error, RequestTimeout):
        _capture_request_error(error, with_body=False)


def _capture_request_error(error: BaseException, with_body: bool = True) -> None:
    """One event built from the request, sent from a scope of its own: the process has one
    scope in this mode, and nothing of this request may stay in it."""
    event, hint = event_from_exception(
        error,
        client_options=sentry_sdk.get_client().options,
        mechanism={"type": "flask", "handled": False},
    )
    event["request"] = _request_data(with_body)
    event["transaction"] = str(request.url_rule) if request.url_rule else request.method
    event["transaction_info"] = {"source": "route"}
    event["breadcrumbs"] = {"values": [_breadcrumb(r) for r in g.get("sentry_log_lines", ())]}
    with sentry_sdk.isolation_scope() as scope:
        scope.clear_breadcrumbs()  # the process's own (its start, outgoing calls): no request's
        scope.set_tag("request_id", current_request_id())
        scope.set_tag("trace_id", current_trace_id())
        scope.capture_event(event, hint=hint)


def _request_data(with_body: bool) -> dict[str, object]:
    data: dict[str, object] = {
        "method": request.method,
        "url": request.base_url,
        "query_string": request.query_string.decode("latin-1"),
        "headers": dict(request.headers),
    }
    if with_body and request.content_length and request.content_length <= MAX_BODY_BYTES:
        data["data"] = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    return data


def _breadcrumb(record: Record) -> dict[str, object]:
    return {
        "type": "log",
        "category": record["name"],
        "level": SENTRY_LEVELS.get(record["level"].name, "info"),
        "message": record["message"],
        "timestamp": record["time"],
    }


def scrub_event(event: Event, _hint: Hint) -> Event:
    """Remove secrets and client data from an event before it is sent."""
    request = event.get("request")
    if request:
        request.pop("cookies", None)
        request.pop("env", None)  # REMOTE_ADDR and server details
        headers, data = request.get("headers"), request.get("data")
        if isinstance(headers, dict):
            request["headers"] = _scrub_mapping(headers)
        if isinstance(data, dict):
            request["data"] = _scrub_mapping(data)
        query_string = request.get("query_string")
        if isinstance(query_string, str | bytes):
            request["query_string"] = _scrub_query_string(query_string)
    if isinstance(event.get("user"), dict):
        event["user"].pop("ip_address", None)
    return event


def is_sensitive(name: str) -> bool:
    normalized = name.lower().replace("-", "_")
    return any(part in normalized for part in SENSITIVE_NAME_PARTS)


def _scrub_mapping(mapping: Mapping[str, object]) -> dict[str, object]:
    return {
        key: FILTERED if is_sensitive(key) else _scrub_value(value)
        for key, value in mapping.items()
    }


def _scrub_value(value: object) -> object:
    return _scrub_mapping(value) if isinstance(value, dict) else value


def _scrub_query_string(query_string: str | bytes) -> str:
    if isinstance(query_string, bytes):
        query_string = query_string.decode("utf-8", "replace")
    pairs = parse_qsl(query_string, keep_blank_values=True)
    return urlencode([(key, FILTERED if is_sensitive(key) else value) for key, value in pairs])
