"""Requests that run past gunicorn's worker timeout, reported as what they are.

When a request outlives GUNICORN_TIMEOUT, the master sends its worker SIGABRT and
gunicorn ends the worker with a bare SystemExit(1): the client is cut off, and the logs
and error reports show an anonymous exit without the request. gunicorn calls its
`worker_abort` hook (gunicorn.conf.py) first, inside the stuck request. There,
`end_timed_out_request` logs one line with the request id, route and running time, tells
the metrics, and raises RequestTimeout in place of gunicorn's exit: it unwinds from the
line where the request was stuck, so an error reporter sees a RequestTimeout with that
stack.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from blinker import Namespace
from flask import Flask, current_app, has_request_context, request
from loguru import logger

from .request_context import current_request_id

if TYPE_CHECKING:  # for type checkers only
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Sent with the route of a request that the worker timeout ended (metrics count them).
request_timed_out = Namespace().signal("request-timed-out")
# When the request started (time.monotonic()), in its WSGI environ.
STARTED_KEY = f"{__name__}.started"


class RequestTimeout(SystemExit):
    """The worker timeout ended this request; a SystemExit, as gunicorn ends an aborted worker."""

    def __init__(self, message: str, request_id: str):
        super().__init__(message)
        self.request_id = request_id


def init_request_timeouts(app: Flask) -> None:
    app.wsgi_app = StartNoted(app.wsgi_app)  # type: ignore[method-assign]


class StartNoted:
    """A WSGI middleware that notes when each request started; cheaper than a request hook."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[STARTED_KEY] = time.monotonic()
        return self.app(environ, start_response)


def end_timed_out_request(timeout_seconds: int) -> None:
    """Report the request this worker is stuck in and end it; nothing to do between requests."""
    if not has_request_context():
        return
    route = str(request.url_rule)  # bounded: None for a URL that matched no route
    ran_seconds = time.monotonic() - request.environ.get(STARTED_KEY, time.monotonic())
    logger.bind(
        **{
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
            "event.duration": int(ran_seconds * 1_000_000_000),
        }
    ).error(
        "request timed out: {} {} ran {:.1f} s, past the {} s worker timeout; the worker restarts",
        request.method,
        route,
        ran_seconds,
        timeout_seconds,
    )
    # The app itself, the sender the metrics listen to; current_app is typed as the app, not
    # as the proxy it is.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    request_timed_out.send(app, route=route)
    raise RequestTimeout(
        f"{request.method} {route} ran {ran_seconds:.1f} s, past the {timeout_seconds} s "
        "worker timeout",
        request_id=current_request_id(),
    )
