"""Logging through loguru: one place that decides where every log line goes.

configure_logging builds the sinks (log_sinks.py, and log_syslog.py when a syslog receiver
is set) from the settings, for lines rendered by log_lines.py, and routes the standard
logging module in (log_adapters.py). Under
gunicorn it runs in the master, which alone owns the log file: the workers render their
lines and hand them over (log_relay.py), and the master writes those straight to its sinks
(write_rendered), with no loguru record made a second time. The app factory only
configures logging itself when nothing did it before (development server, tests).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from loguru import logger

from ..settings import Settings, SettingsError
from .log_adapters import route_stdlib_logging
from .log_compression import compress_in_background
from .log_lines import line_renderers
from .log_record_keys import LINE
from .log_sinks import (
    BackgroundWriter,
    CountLostLines,
    LogFile,
    Render,
    RenderedLines,
    SharedSink,
    Sink,
    count_nothing,
    local_now,
    relayed_message,
    stderr_notices,
)
from .log_syslog import SyslogSender, tls_context
from .request_context import current_request_id, current_span_id, current_trace_id

if TYPE_CHECKING:  # annotations only; loguru has these types in its stubs alone
    from loguru import FormatFunction, Message, Record

# The format a sink hands loguru: loguru fills in the line that format_record has set.
_WRITE_LINE = "{extra[" + LINE + "]}"
# The sinks by destination, which the lines that workers rendered are written to as well.
_sinks: dict[str, SharedSink] = {}


def configure_logging(settings: Settings, count_lost_lines: CountLostLines = count_nothing) -> None:
    """(Re)build every sink from the settings; safe to call again (gunicorn re-runs it on HUP,
    with the relay paused: see LogRelay.paused). Lines a sink drops or cannot write are
    reported to `count_lost_lines`."""
    logger.remove()
    _sinks.clear()
    logger.configure(
        extra={"request_id": "-", "trace_id": "-", "span_id": "-"}, patcher=_add_request_context
    )
    for destination, render in line_renderers(settings).items():
        sink: Sink
        if destination == "console":
            sink = _console(sys.stdout, count_lost_lines)
        # line_renderers names "file" and "syslog" only when they are set.
        elif destination == "file" and settings.log_file is not None:
            sink = _log_file(settings.log_file, settings, render, count_lost_lines)
        elif destination == "syslog" and settings.log_syslog_address is not None:
            sink = _syslog(settings.log_syslog_address, settings, count_lost_lines)
        else:
            continue
        _sinks[destination] = SharedSink(sink)
        logger.add(_sinks[destination], level=settings.log_level, format=_as_format(render))
    route_stdlib_logging(settings.log_level)


def write_rendered(records: list[tuple[str, RenderedLines]]) -> None:
    """The lines of records a worker rendered, each with its level, written to the sinks as
    they are, all the lines of a sink at once.

    The worker left out what is below the log level already. Console and file often share
    a line: it is made into a message once."""
    by_destination: dict[str, list[Message]] = {}
    received = local_now()
    for level, lines in records:
        for destinations, line in lines:
            message = relayed_message(level, line, received)
            for destination in destinations:
                by_destination.setdefault(destination, []).append(message)
    for destination, messages_of_sink in by_destination.items():
        sink = _sinks.get(destination)
        if sink is not None:
            sink.write_lines(messages_of_sink)


def observe_records(observe: Callable[[Record], object], level: str | int) -> None:
    """Hand every record at `level` or above to `observe`, from now on.

    loguru calls a sink's filter with the record before it copies the record, formats it
    and takes a lock for the sink: a quarter of what a line costs, which an observer that
    reads the record itself does not need. `observe` runs in the filter of a sink that
    never gets a line."""

    def observe_only(record: Record) -> bool:
        observe(record)
        return False

    logger.add(_never_written, level=level, filter=observe_only)


def _never_written(_message: Message) -> None:
    """The sink of observe_records: its records stop at its filter."""


def _as_format(render: Render) -> FormatFunction:
    """A loguru format that writes the line our renderer makes."""

    def format_record(record: Record) -> str:
        record["extra"][LINE] = render(record)
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


def _syslog(address: str, settings: Settings, count_lost_lines: CountLostLines) -> SyslogSender:
    """Sent by a thread of its own, which the network can hold up without holding up logging."""
    return SyslogSender(
        address,
        tls=tls_context(settings.log_syslog_ca_file) if settings.log_syslog_tls else None,
        capacity=settings.log_syslog_buffer_bytes,
        count_lost_lines=count_lost_lines,
        notices=stderr_notices(),
    )


def _log_file(
    log_file: Path, settings: Settings, render: Render, count_lost_lines: CountLostLines
) -> LogFile:
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        return LogFile(
            log_file,
            render,
            count_lost_lines,
            rotation=settings.log_rotation,
            retention=_retention(settings.log_retention),
            compression=compress_in_background(settings.log_compression),
            encoding="utf-8",
        )
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
    if extra["span_id"] == "-":
        extra["span_id"] = current_span_id()
    extra.setdefault("_logger", record["name"])
