"""Logs of the standard logging module and of gunicorn, written through loguru.

Flask, werkzeug and libraries log through the standard logging module, gunicorn through
loggers of its own: their records become loguru records, rendered and written like the
service's own lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from gunicorn.glogging import Logger as GunicornBaseLogger
from loguru import logger

from .request_context import REQUEST_IDS_KEY, RequestIds
from .timeouts import RequestTimeout

if TYPE_CHECKING:  # annotations only
    from gunicorn.config import Config
    from gunicorn.http import Request
    from gunicorn.http.wsgi import Response


class InterceptHandler(logging.Handler):
    """Send records of the standard logging module (Flask, werkzeug, libraries) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(_logger=record.name).opt(exception=record.exc_info).log(
            level, record.getMessage()
        )


def route_stdlib_logging(level: str) -> None:
    """Every record of the standard logging module at `level` or above, to loguru."""
    # At the service's level, not 0: libraries' debug calls (urllib3's, for one) then stop
    # at `isEnabledFor` instead of each building a record that loguru throws away.
    logging.basicConfig(handlers=[InterceptHandler()], level=logger.level(level).no, force=True)


class GunicornLogger(GunicornBaseLogger):
    """gunicorn's error and access logs, written through loguru like everything else."""

    def setup(self, cfg: Config) -> None:
        super().setup(cfg)
        for gunicorn_log in (self.error_log, self.access_log):
            gunicorn_log.handlers = [InterceptHandler()]
            gunicorn_log.propagate = False

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:  # passed on as is
        # A request ended by the worker timeout was reported already, with its request id.
        if not isinstance(sys.exception(), RequestTimeout):
            super().exception(msg, *args, **kwargs)

    def access(
        self,
        resp: Response,
        req: Request,
        environ: Mapping[str, object],
        request_time: timedelta,
    ) -> None:
        if not self.access_log_enabled:
            return
        method = environ.get("REQUEST_METHOD", "-")
        # An answer gunicorn writes itself (after a timeout, say) comes with a bare environ.
        path = environ.get("PATH_INFO") or getattr(req, "path", None) or "-"
        duration_ms = request_time.total_seconds() * 1000
        status = _status_code(resp)
        request_id, trace_id, span_id = _request_ids(environ)
        # ECS leaves out a field that has no value, rather than filling it with "-".
        agent = environ.get("HTTP_USER_AGENT")
        user_agent = {"user_agent.original": agent} if agent else {}
        self.write_access_line(
            f"{method} {path} {status} {duration_ms:.1f}ms",
            {
                "_logger": "gunicorn.access",
                "request_id": request_id,
                "trace_id": trace_id,
                "span_id": span_id,
                "http.request.method": method,
                "url.path": path,
                "http.response.status_code": status,
                "http.response.body.bytes": getattr(resp, "sent", None),
                "event.duration": int(duration_ms * 1_000_000),
                "client.address": environ.get("REMOTE_ADDR", "-"),
                **user_agent,
            },
        )

    def write_access_line(self, message: str, fields: dict[str, object]) -> None:
        # The fields go in as keyword arguments, which loguru adds to the record's extra
        # fields: cheaper than bind(), which makes a logger for every request.
        logger.info("{}", message, **fields)


def _status_code(resp: Response) -> int | None:
    """The answer's status; an error answer that gunicorn writes itself has only `status`."""
    status = str(resp.status or "").split(" ", 1)[0]
    return int(status) if status.isdigit() else None


def _request_ids(environ: Mapping[str, object]) -> RequestIds:
    """Put there by request_context. gunicorn answers a timed-out request itself, from an
    environ of its own."""
    ids = environ.get(REQUEST_IDS_KEY)
    return ids if isinstance(ids, tuple) else (_timed_out_request_id(), "-", "-")


def _timed_out_request_id() -> str:
    error = sys.exception()
    return error.request_id if isinstance(error, RequestTimeout) else "-"
