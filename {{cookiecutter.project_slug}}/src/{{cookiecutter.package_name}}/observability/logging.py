"""Logging through loguru: one place that decides where every log line goes.

Lines are rendered by log_lines.py, so that a gunicorn worker can render a line and
hand it to the master, which alone owns the log file (see log_relay.py). The app factory
only configures logging itself when nothing did it before (development server, tests).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gunicorn.glogging import Logger as GunicornBaseLogger
from loguru import logger

from ..settings import Settings, SettingsError
from .log_compression import compress_in_background
from .log_lines import line_renderers
from .log_record_keys import LINE, RELAYED
from .log_sinks import (
    BackgroundWriter,
    CountLostLines,
    LogFile,
    Render,
    count_nothing,
    stderr_notices,
)
from .request_context import current_request_id, current_trace_id
from .timeouts import RequestTimeout

if TYPE_CHECKING:  # annotations only; loguru has these types in its stubs alone
    from gunicorn.config import Config
    from gunicorn.http import Request
    from gunicorn.http.wsgi import Response
    from loguru import FormatFunction, Record

# The format a sink hands loguru: loguru fills in the line that format_record has set.
_WRITE_LINE = "{extra[" + LINE + "]}"

_configured = False


def configure_logging(settings: Settings, count_lost_lines: CountLostLines = count_nothing) -> None:
    """(Re)build every sink from the settings; safe to call again (gunicorn re-runs it on HUP,
    with the relay paused: see LogRelay.paused). Lines a sink drops or cannot write are
    reported to `count_lost_lines`."""
    global _configured
    logger.remove()
    logger.configure(extra={"request_id": "-", "trace_id": "-"}, patcher=_add_request_context)
    for destination, render in line_renderers(settings).items():
        line_format = _as_format(render, destination)
        if destination == "console":
            console = _console(sys.stdout, count_lost_lines)
            logger.add(console, level=settings.log_level, format=line_format)
        elif settings.log_file is not None:  # line_renderers has a "file" only with one
            _add_file_sink(settings.log_file, settings, line_format, render, count_lost_lines)
    _route_stdlib_logging(settings)
    _configured = True


def ensure_logging(settings: Settings) -> None:
    """Configure logging unless the gunicorn master (or an earlier call) already did."""
    if not _configured:
        configure_logging(settings)


def _as_format(render: Render, destination: str) -> FormatFunction:
    """A loguru format that writes our rendered line, or the one a worker already rendered."""

    def format_record(record: Record) -> str:
        relayed = record["extra"].get(RELAYED)
        record["extra"][LINE] = relayed.get(destination, "") if relayed else render(record)
        return _WRITE_LINE

    return format_record


def _console(stream: TextIO, count_lost_lines: CountLostLines) -> TextIO | BackgroundWriter:
    """A stream with a file descriptor (a pipe, a terminal) can block on its reader: it is
    written from a thread of its own. An in-memory one (a test's capture) cannot."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    return BackgroundWriter(
        stream, "console", count_lost_lines=count_lost_lines, notices=stderr_notices()
    )


def _add_file_sink(
    log_file: Path,
    settings: Settings,
    line_format: FormatFunction,
    render: Render,
    count_lost_lines: CountLostLines,
) -> None:
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        sink = LogFile(
            log_file,
            render,
            count_lost_lines,
            rotation=settings.log_rotation,
            retention=_retention(settings.log_retention),
            compression=compress_in_background(settings.log_compression),
            encoding="utf-8",
        )
        logger.add(sink, level=settings.log_level, format=line_format)
    except (OSError, ValueError) as error:
        raise SettingsError(f"invalid setting LOG_FILE={str(log_file)!r}: {error}") from None


def _retention(value: str) -> int | str:
    """A bare number keeps that many files; anything else is an interval."""
    return int(value) if value.isdigit() else value


def _add_request_context(record: Record) -> None:
    extra = record["extra"]
    if extra["request_id"] == "-":
        extra["request_id"] = current_request_id()
    if extra["trace_id"] == "-":
        extra["trace_id"] = current_trace_id()
    extra.setdefault("_logger", record["name"])


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


def _route_stdlib_logging(settings: Settings) -> None:
    # At the service's level, not 0: libraries' debug calls (urllib3's, for one) then stop
    # at `isEnabledFor` instead of each building a record that loguru throws away.
    level = logger.level(settings.log_level).no
    logging.basicConfig(handlers=[InterceptHandler()], level=level, force=True)


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
        logger.bind(
            _logger="gunicorn.access",
            request_id=_response_header(resp, "x-request-id") or _timed_out_request_id(),
            **{
                "http.request.method": method,
                "url.path": path,
                "http.response.status_code": status,
                "http.response.body.bytes": getattr(resp, "sent", None),
                "event.duration": int(duration_ms * 1_000_000),
                "client.address": environ.get("REMOTE_ADDR", "-"),
                "user_agent.original": environ.get("HTTP_USER_AGENT", "-"),
            },
        ).info("{} {} {} {:.1f}ms", method, path, status, duration_ms)


def _status_code(resp: Response) -> int | None:
    """The answer's status; an error answer that gunicorn writes itself has only `status`."""
    status = str(resp.status or "").split(" ", 1)[0]
    return int(status) if status.isdigit() else None


def _response_header(resp: Response, name: str) -> str | None:
    return next((value for key, value in resp.headers if key.lower() == name), None)


def _timed_out_request_id() -> str:
    """gunicorn answers a timed-out request itself, with none of the service's headers."""
    error = sys.exception()
    return error.request_id if isinstance(error, RequestTimeout) else "-"
