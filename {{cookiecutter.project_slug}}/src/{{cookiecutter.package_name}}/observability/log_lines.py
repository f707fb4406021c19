"""How a log record becomes a line: flat JSON with Elastic Common Schema field names, for
collectors, or one line of text, for people.

The JSON follows Elastic's ecs-logging specification (github.com/elastic/ecs-logging,
spec/spec.json): `@timestamp`, `log.level` and `message` come first, in that order,
`ecs.version` is always there, and dotted names stay flat keys, never nested objects.

Plain functions of the record, so that a gunicorn worker can render its lines and hand
them to the master, which only writes them (see log_relay.py).
"""

from __future__ import annotations

import json
import traceback
from datetime import UTC
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from ..settings import SERVICE_NAME, Settings
from .log_record_keys import LINE
from .log_sinks import Render

if TYPE_CHECKING:  # loguru's types exist for type checkers only
    from loguru import Record

# The version of the Elastic Common Schema whose field names the JSON lines use.
ECS_VERSION = "8.11.0"
# Keys bound by the service itself; everything else in `extra` is copied into JSON as is.
_RESERVED_EXTRA = {"request_id", "trace_id", "span_id", "_logger", LINE}
# Every C0 control character but tab, and DEL, written as Python writes them in a string.
_ESCAPED_CONTROLS = {
    code: repr(chr(code))[1:-1] for code in (*range(0x20), 0x7F) if code != ord("\t")
}
Raised = tuple[type[BaseException], BaseException | None, TracebackType | None]


def line_renderers(settings: Settings) -> dict[str, Render]:
    """How a record becomes a line, per destination; files and syslog are for collectors:
    always JSON."""
    json_line = json_renderer(settings)
    renderers = {"console": json_line if settings.log_format == "json" else text_line}
    if settings.log_file is not None:
        renderers["file"] = json_line
    if settings.log_syslog_address is not None:
        renderers["syslog"] = json_line
    return renderers


def text_line(record: Record) -> str:
    """One line for people. Control characters in a message (a header, a path) are escaped:
    a newline cannot forge another line, nor an escape sequence rewrite a terminal."""
    message = record["message"]
    if not message.isprintable():  # a tenth of translate()'s cost on every line
        message = message.translate(_ESCAPED_CONTROLS)
    extra = record["extra"]
    # Local time to the millisecond, with no offset: isoformat costs half of strftime.
    time = record["time"].isoformat(" ", "milliseconds")[:23]
    line = (
        f"{time} | {record['level'].name:<8} | {extra['request_id']} | {extra['_logger']} - "
        f"{message}\n"
    )
    if (raised := _raised(record)) is not None:
        line += _stack_trace(raised)
    return line


def json_renderer(settings: Settings) -> Render:
    static_fields = {
        "ecs.version": ECS_VERSION,
        "service.name": SERVICE_NAME,
        "service.environment": settings.app_env,
        # ecs-logging's default: one dataset per service, which Elastic's log anomaly
        # detection needs to tell the service's lines from others.
        "event.dataset": SERVICE_NAME,
    }

    def json_line(record: Record) -> str:
        return json_text(_json_fields(record, static_fields)) + "\n"

    return json_line


def json_text(fields: dict[str, object]) -> str:
    """`fields` as JSON, by orjson: a tenth of the standard library's cost, paid for every
    line. What orjson refuses (a lone surrogate, an integer beyond 64 bits) the standard
    library writes, escaped: no line is lost to a value. Anything else becomes its str()."""
    try:
        return orjson.dumps(fields, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(fields, default=str)


def _json_fields(record: Record, static_fields: dict[str, str]) -> dict[str, object]:
    """A flat object with Elastic Common Schema field names, one per line."""
    extra = record["extra"]
    fields: dict[str, object] = {
        "@timestamp": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "log.level": record["level"].name.lower(),
        "message": record["message"],
        **static_fields,
        "log.logger": extra.get("_logger", record["name"]),
        "process.pid": record["process"].id,
    }
    if extra.get("request_id", "-") != "-":
        fields["http.request.id"] = extra["request_id"]
    if extra.get("trace_id", "-") != "-":
        fields["trace.id"] = extra["trace_id"]
    if extra.get("span_id", "-") != "-":
        fields["span.id"] = extra["span_id"]
    fields.update((key, value) for key, value in extra.items() if key not in _RESERVED_EXTRA)
    if (raised := _raised(record)) is not None:
        fields.update(_error_fields(raised))
    return fields


def _raised(record: Record) -> Raised | None:
    """The exception a record carries: none for logger.exception() called where no exception
    is being handled, which loguru records as (None, None, None)."""
    error_type, error, trace = record["exception"] or (None, None, None)
    return None if error_type is None else (error_type, error, trace)


def _error_fields(raised: Raised) -> dict[str, str]:
    error_type, error, _ = raised
    return {
        "error.type": error_type.__name__,
        "error.message": str(error),
        "error.stack_trace": _stack_trace(raised),
    }


def _stack_trace(raised: Raised) -> str:
    return "".join(traceback.format_exception(*raised))
