"""The rules of Elastic's ecs-logging specification (github.com/elastic/ecs-logging,
spec/spec.json), as a check of one parsed log line: every JSON line a test reads goes
through `ecs_record`, so that a change that breaks the format fails the tests that see it.
"""

import json
from datetime import datetime
from pathlib import Path

FIRST_KEYS = ["@timestamp", "log.level", "message"]  # in this order, before any other
REQUIRED = {"@timestamp", "log.level", "ecs.version"}
# Dotted names the specification wants as top-level keys, never as nested objects.
TOP_LEVEL = {"log.level", "ecs.version"}
INTEGERS = {"log.origin.file.line"}
STRINGS = {
    "log.level", "message", "ecs.version", "trace.id", "transaction.id", "service.name",
    "service.node.name", "service.version", "event.dataset", "service.environment",
    "process.thread.name", "log.logger", "log.origin.file.name", "log.origin.function",
    "error.type", "error.message", "error.stack_trace",
}  # fmt: skip
LABEL_KEY_FORBIDDEN = (".", "*", "\\")


def ecs_problems(record: object) -> list[str]:
    """What makes `record`, one parsed JSON line, break the specification: nothing if valid."""
    if not isinstance(record, dict):
        return [f"a line must be a JSON object, not {type(record).__name__}"]
    problems = [f"{key} is missing" for key in sorted(REQUIRED - record.keys())]
    first = [key for key in FIRST_KEYS if key in record]
    if list(record)[: len(first)] != first:
        problems.append(f"the first keys must be {first}, not {list(record)[: len(first)]}")
    for name in TOP_LEVEL:
        parent, child = name.split(".")
        if isinstance(record.get(parent), dict) and child in record[parent]:
            problems.append(f"{name} is nested in an object {parent!r}")
    problems += [f"{key} must be a string" for key in STRINGS & record.keys()
                 if not isinstance(record[key], str)]  # fmt: skip
    problems += [f"{key} must be an integer" for key in INTEGERS & record.keys()
                 if type(record[key]) is not int]  # fmt: skip
    problems += _timestamp_problems(record.get("@timestamp"))
    problems += _labels_problems(record.get("labels"))
    return problems


def ecs_record(line: str) -> dict:
    """One JSON log line, parsed, after checking that it follows the specification."""
    record = json.loads(line)
    problems = ecs_problems(record)
    assert not problems, f"not an ECS log line ({'; '.join(problems)}): {line}"
    return record


def ecs_records(text: str) -> list[dict]:
    """Every non-blank line of `text`, each one checked."""
    return [ecs_record(line) for line in text.splitlines() if line.strip()]


def written_records(log_file: Path) -> list[dict]:
    """The lines of a log file that a running service may be writing, each one checked: the
    last line waits for the next read until its newline is written."""
    if not log_file.exists():
        return []
    complete, _, _ = log_file.read_bytes().rpartition(b"\n")
    return ecs_records(complete.decode())


def _timestamp_problems(value: object) -> list[str]:
    if value is None:
        return []  # told as missing
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return [f"@timestamp {value!r} is not an ISO 8601 date and time"]
    return [] if moment.tzinfo is not None else [f"@timestamp {value!r} has no time zone"]


def _labels_problems(labels: object) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return ["labels must be an object"]
    return [f"label {key!r} has one of {LABEL_KEY_FORBIDDEN}" for key in labels
            if any(mark in key for mark in LABEL_KEY_FORBIDDEN)]  # fmt: skip
