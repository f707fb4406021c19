"""The checker that every JSON log line in these tests goes through (ecs.py) catches each
way a line can break Elastic's ecs-logging specification."""

import json

import pytest

from .ecs import ecs_problems, ecs_record

VALID = {
    "@timestamp": "2026-01-15T09:12:03.517+00:00",
    "log.level": "info",
    "message": "item 7 served",
    "ecs.version": "8.11.0",
}


def test_a_valid_line_passes():
    line = {**VALID, "labels": {"team": "a"}}
    assert ecs_record(json.dumps(line)) == line


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({key: VALID[key] for key in ["@timestamp", "log.level"]}, "ecs.version is missing"),
        ({"log.level": "info", **VALID}, "the first keys must be"),
        ({"message": "m", **VALID}, "the first keys must be"),
        ({**VALID, "log": {"level": "info"}}, "log.level is nested"),
        ({**VALID, "ecs.version": 8}, "ecs.version must be a string"),
        ({**VALID, "log.origin.file.line": "7"}, "log.origin.file.line must be an integer"),
        ({**VALID, "@timestamp": "yesterday"}, "is not an ISO 8601"),
        ({**VALID, "@timestamp": "2026-01-15T09:12:03"}, "has no time zone"),
        ({**VALID, "labels": {"a.b": 1}}, "label 'a.b'"),
        ([VALID], "must be a JSON object"),
    ],
)
def test_each_broken_rule_is_named(record, problem):
    assert any(problem in found for found in ecs_problems(record))
