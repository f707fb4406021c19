"""Error reporting to Sentry, switched on by SENTRY_DSN.

Unhandled exceptions reach Sentry once, through the Flask integration; log records
become breadcrumbs only (with logging intercepted into loguru, letting both the logging
and loguru integrations raise events would report every error twice). Events are
scrubbed of credentials, cookies, tokens in query strings and the client address
before they leave the process.
"""

import logging
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlencode

import sentry_sdk
from flask import Flask
from loguru import logger
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.loguru import LoguruIntegration
from sentry_sdk.types import Event, Hint, SamplingContext

from ..settings import Settings
from .health import polled_paths
from .request_context import current_request_id, current_trace_id

FILTERED = "[Filtered]"
# Matched anywhere in a lower-cased name, "-" read as "_": X-Api-Key and HTTP_X_API_KEY alike.
SENSITIVE_NAME_PARTS = (
    "auth", "cookie", "api_key", "apikey", "password", "passwd", "secret",
    "token", "session", "csrf", "signature", "private_key", "forwarded_for", "real_ip",
)  # fmt: skip


def init_error_reporting(app: Flask, settings: Settings) -> None:
    if not settings.sentry_dsn:
        logger.warning("SENTRY_DSN is not set: errors are logged but not reported to Sentry")
        return
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.app_env,
        release=settings.app_release,
        include_local_variables=False,  # locals hold the WSGI environ with its raw headers
        # No sampler at all when tracing is off: with one, outgoing calls would carry its
        # "not sampled" in sentry-trace, and the services called would not trace them either.
        traces_sampler=_traces_sampler(app, settings.sentry_traces_sample_rate)
        if settings.sentry_traces_sample_rate > 0
        else None,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        integrations=[
            FlaskIntegration(transaction_style="url"),
            # Breadcrumbs only; no sink for Sentry's Logs product, which would format and
            # then drop every line unless enable_logs is on.
            LoguruIntegration(level=logging.INFO, event_level=None, sentry_logs_level=None),
        ],
        disabled_integrations=[LoggingIntegration()],
        shutdown_timeout=2,
    )
    app.before_request(_tag_request_ids)
    logger.info("Sentry error reporting enabled for {}", settings.app_env)


def _tag_request_ids() -> None:
    sentry_sdk.set_tag("request_id", current_request_id())
    sentry_sdk.set_tag("trace_id", current_trace_id())


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
