"""Request id and W3C trace id for every request, bound into every log line.

Other modules read them with `current_request_id()`, `current_trace_id()` and
`current_span_id()`: "-" outside a request. The access line, written after the request has
ended, finds all three in the WSGI environ, under REQUEST_IDS_KEY.

`X-Request-ID` from the client (or a proxy) is kept only when it is short and made of
safe characters; anything else is replaced, so a header cannot forge or break a log
line. The id is echoed back in the response. A valid `traceparent` header supplies the
trace id, so log lines join the caller's distributed trace. A tracer that starts a span for
the request (`use_span_ids`) supplies both the trace id and its span's id instead.

A WSGI middleware around the Flask app gives the ids and puts the request id on the answer:
Flask's request hooks cost a request more than the ids themselves (the template's README,
Benchmark).
"""

# Annotations as strings: the nested start_response below is made at each request.
from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flask import Flask

if TYPE_CHECKING:  # for type checkers only
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower()  # header names are case-insensitive
# The headers as the WSGI environ holds them: read there, without Flask's header mapping.
REQUEST_ID_VARIABLE = "HTTP_X_REQUEST_ID"
TRACEPARENT_VARIABLE = "HTTP_TRACEPARENT"
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# version-traceid-parentid-flags; all-zero ids are invalid by the W3C spec.
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")

_request_id: ContextVar[str] = ContextVar("request_id", default="-")
_trace_id: ContextVar[str] = ContextVar("trace_id", default="-")
_span_id: ContextVar[str] = ContextVar("span_id", default="-")

SpanIds = tuple[str, str]  # a trace id and a span id, in hex as W3C Trace Context writes them
RequestIds = tuple[str, str, str]  # the request id, the trace id and the span id
REQUEST_IDS_KEY = f"{__name__}.ids"


def current_request_id() -> str:
    return _request_id.get()


def current_trace_id() -> str:
    return _trace_id.get()


def current_span_id() -> str:
    return _span_id.get()


def init_request_context(app: Flask) -> None:
    """Call it before init_tracing: the ids are then given inside the request's span."""
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app, app.extensions)  # type: ignore[method-assign]


def use_span_ids(app: Flask, span_ids: Callable[[], SpanIds | None]) -> None:
    """Take each request's trace and span ids from a tracer: `span_ids` gives those of the
    current span, None when there is none."""
    app.extensions["span_ids"] = span_ids


def incoming_request_id(header_value: str | None) -> str:
    if header_value and SAFE_REQUEST_ID.match(header_value):
        return header_value
    return random_id()


def incoming_trace_id(traceparent: str | None) -> str:
    match = TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    return match.group(1) if match else random_id()


def random_id() -> str:
    """128 random bits in hex. An id is no secret: Python's generator, which each forked
    worker reseeds, makes it without the system call of secrets.token_hex, which cost a
    request 2 % of its time."""
    return f"{random.getrandbits(128):032x}"


class RequestIdMiddleware:
    """A WSGI middleware: each request gets its ids before Flask sees it, and its answer the
    request id."""

    def __init__(self, app: WSGIApplication, extensions: dict[str, Any]) -> None:
        self.app = app
        self.extensions = extensions  # the Flask app's, where use_span_ids puts the tracer's

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request_id = incoming_request_id(environ.get(REQUEST_ID_VARIABLE))
        trace_id, span_id = self._span_ids() or (
            incoming_trace_id(environ.get(TRACEPARENT_VARIABLE)),
            "-",
        )
        environ[REQUEST_IDS_KEY] = (request_id, trace_id, span_id)
        request_token = _request_id.set(request_id)
        trace_token = _trace_id.set(trace_id)
        span_token = _span_id.set(span_id)

        def start_response_with_id(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            # The service's id, whatever a view set: one id per request, the one in its lines.
            headers = [header for header in headers if header[0].lower() != _REQUEST_ID_NAME]
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start_response_with_id)
        finally:  # Flask has ended the request: what is logged next is not its line
            _request_id.reset(request_token)
            _trace_id.reset(trace_token)
            _span_id.reset(span_token)

    def _span_ids(self) -> SpanIds | None:
        span_ids = self.extensions.get("span_ids")
        return span_ids() if span_ids else None
