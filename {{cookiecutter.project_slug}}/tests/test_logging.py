import gzip
import json
import logging
import os
import sys
import traceback
import zipfile
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from loguru import logger

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import request_context
from {{ cookiecutter.package_name }}.observability.log_adapters import (
    GunicornLogger,
)
from {{ cookiecutter.package_name }}.observability.log_compression import (
    finish_compressions,
)
from {{ cookiecutter.package_name }}.observability.logging import (
    configure_logging,
)
from {{ cookiecutter.package_name }}.observability.timeouts import (
    RequestTimeout,
)
from {{ cookiecutter.package_name }}.settings import (
    SERVER_SETTINGS,
    SettingsError,
)

from .conftest import make_settings
from .ecs import ecs_record, ecs_records


def json_lines(text: str) -> list[dict]:
    return ecs_records(text)


def read_all_log_files(folder) -> list[str]:
    lines = []
    for path in sorted(folder.iterdir()):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as log_file:
            lines.extend(log_file.read().splitlines())
    return lines


def test_json_lines_are_flat_with_stable_field_names(capsys):
    configure_logging(make_settings())
    logger.bind(order_id=42).info("order placed")
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["message"] == "order placed"
    assert record["log.level"] == "info"
    assert record["service.name"] == "{{ cookiecutter.project_slug }}"
    assert record["service.environment"] == "development"
    assert record["order_id"] == 42
    assert {"@timestamp", "log.logger", "process.pid"} <= record.keys()
    # ecs-logging's default dataset: the service name
    assert record["event.dataset"] == record["service.name"]
    assert list(record)[:4] == ["@timestamp", "log.level", "message", "ecs.version"]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (2**70, 2**70),  # beyond the 64-bit integers of orjson, which writes JSON lines
        ("\udc80", "\udc80"),  # a lone surrogate: what os.fsdecode makes of a stray byte
        ({7: "seven"}, {"7": "seven"}),
        ({"x"}, "{'x'}"),  # no JSON form: its str()
    ],
    ids=["big-integer", "lone-surrogate", "number-keys", "set"],
)
def test_a_value_json_has_no_plain_form_for_is_written_and_the_line_kept(capsys, value, written):
    configure_logging(make_settings())
    logger.bind(odd=value).info("an odd value")
    record = json_lines(capsys.readouterr().out)[-1]
    assert (record["message"], record["odd"]) == ("an odd value", written)


def test_exceptions_carry_type_message_and_stack_but_no_local_values(capsys):
    configure_logging(make_settings())
    api_token = "s3cr3t-token-value"  # noqa: S105
    try:
        raise ValueError(f"bad input of length {len(api_token)}")
    except ValueError:
        logger.exception("request failed")
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["error.type"] == "ValueError"
    assert record["error.message"] == "bad input of length 18"
    assert "raise ValueError" in record["error.stack_trace"]
    assert api_token not in json.dumps(record)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logger_exception_outside_an_except_block_adds_no_empty_error(capsys, log_format):
    """A common slip: nothing is being handled, so there is no error to describe."""
    configure_logging(make_settings(log_format=log_format))
    logger.exception("nothing raised")
    output = capsys.readouterr().out
    assert output.count("\n") == 1
    assert "NoneType" not in output
    if log_format == "json":
        assert not [key for key in ecs_record(output) if key.startswith("error.")]


def test_standard_logging_goes_through_loguru(capsys):
    configure_logging(make_settings())
    logging.getLogger("werkzeug").warning("from a library")
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["message"] == "from a library"
    assert record["log.logger"] == "werkzeug"
    assert record["log.level"] == "warning"


def test_a_standard_logging_level_loguru_has_no_name_for_keeps_its_number(capsys):
    configure_logging(make_settings())
    logging.getLogger("library").log(35, "between warning and error")  # no name: "Level 35"
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["message"] == "between warning and error"
    assert record["log.level"] == "level 35"


def test_log_level_filters(capsys):
    configure_logging(make_settings(log_level="WARNING"))
    logger.info("quiet")
    logger.warning("loud")
    messages = [record["message"] for record in json_lines(capsys.readouterr().out)]
    assert messages == ["loud"]


def test_text_format_cannot_be_forged_with_newlines_or_escape_sequences(capsys):
    configure_logging(make_settings(log_format="text"))
    logger.info("agent: curl\r\nFORGED | ERROR | admin logged in \x1b[2J\x00\x7f\tend")
    output = capsys.readouterr().out
    assert len(output.strip().splitlines()) == 1
    assert "curl\\r\\nFORGED | ERROR | admin logged in \\x1b[2J\\x00\\x7f\tend" in output


def log_rotating_lines(log_file, compression: str, lines: int) -> None:
    """`lines` numbered lines into a file rotated every 2 KB; returns once all are compressed."""
    configure_logging(
        make_settings(log_file=log_file, log_rotation="2 KB", log_retention="100",
                      log_compression=compression)
    )  # fmt: skip
    for number in range(lines):
        logger.info("line {}", number)
    logger.remove()  # closes the file
    finish_compressions()


def test_file_sink_rotates_compresses_and_keeps_every_line(tmp_path):
    log_file = tmp_path / "logs" / "service.log"
    log_rotating_lines(log_file, "gz", 200)

    files = sorted(path.name for path in log_file.parent.iterdir())
    assert sum(name.endswith(".gz") for name in files) >= 5
    messages = [ecs_record(line)["message"] for line in read_all_log_files(log_file.parent)]
    assert sorted(messages) == sorted(f"line {number}" for number in range(200))


def test_retention_keeps_only_the_newest_files(tmp_path):
    log_file = tmp_path / "logs" / "service.log"
    configure_logging(
        make_settings(log_file=log_file, log_rotation="1 KB", log_retention="3",
                      log_compression="none")
    )  # fmt: skip
    for number in range(300):
        logger.info("line {}", number)
    logger.remove()
    rotated = [path for path in log_file.parent.iterdir() if path != log_file]
    assert len(rotated) == 3


def test_an_unusable_log_file_is_a_settings_error(tmp_path):
    not_a_folder = tmp_path / "plain-file"
    not_a_folder.write_text("")
    log_file = not_a_folder / "service.log"
    with pytest.raises(SettingsError) as refused:
        configure_logging(make_settings(log_file=log_file))
    assert f"invalid setting LOG_FILE='{log_file}'" in str(refused.value)


def test_logging_set_up_by_the_gunicorn_master_is_not_redone_by_the_app(tmp_path, monkeypatch):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    master_settings = make_settings(log_file=first)
    configure_logging(master_settings)
    monkeypatch.setattr(SERVER_SETTINGS, "in_use", master_settings)  # as the master leaves it
    create_app(make_settings(log_file=second))
    logger.info("where does this go?")
    logger.remove()
    assert "where does this go?" in first.read_text()
    assert not second.exists()


def gunicorn_logger_writing_access_lines(
    logger_class: type[GunicornLogger] = GunicornLogger,
) -> GunicornLogger:
    config = Config()
    config.set("accesslog", "-")
    return logger_class(config)


def ids_of_request(request_id: str) -> dict[str, tuple[str, str, str]]:
    """What request_context leaves in the environ of a request that reached the app."""
    return {request_context.REQUEST_IDS_KEY: (request_id, "-", "-")}


def test_gunicorn_access_lines_are_structured(capsys):
    configure_logging(make_settings())
    gunicorn_logger = gunicorn_logger_writing_access_lines()
    response = SimpleNamespace(status="404 NOT FOUND", sent=9, headers=[("X-Request-ID", "req-1")])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/nothing", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_USER_AGENT": "probe\nFORGED", **ids_of_request("req-1")}  # fmt: skip
    gunicorn_logger.access(response, None, environ, timedelta(milliseconds=12))
    record = json_lines(capsys.readouterr().out)[-1]
    # Queries and log collectors read these names: each one is part of the contract.
    assert record["log.logger"] == "gunicorn.access"
    assert record["message"] == "GET /nothing 404 12.0ms"
    assert {key: record.get(key) for key in ACCESS_FIELDS} == {
        "http.request.id": "req-1",
        "client.address": "127.0.0.1",
        "user_agent.original": "probe\nFORGED",  # kept, but JSON-escaped on one line
        "http.request.method": "GET",
        "url.path": "/nothing",
        "http.response.status_code": 404,
        "http.response.body.bytes": 9,
        "event.duration": 12_000_000,  # nanoseconds
    }


def test_a_request_without_a_user_agent_has_no_user_agent_field(capsys):
    configure_logging(make_settings())
    response = SimpleNamespace(status="200 OK", sent=2, headers=[("X-Request-ID", "req-2")])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1",
               **ids_of_request("req-2")}  # fmt: skip
    gunicorn_logger_writing_access_lines().access(response, None, environ, timedelta(0))
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["http.request.id"] == "req-2"
    assert "user_agent.original" not in record  # absent, as ECS leaves a field it has no value for


ACCESS_FIELDS = [
    "http.request.id", "client.address", "user_agent.original", "http.request.method",
    "url.path", "http.response.status_code", "http.response.body.bytes", "event.duration",
]  # fmt: skip


def test_an_answer_gunicorn_writes_after_a_timeout_carries_the_request_id(capsys):
    configure_logging(make_settings())
    gunicorn_logger = gunicorn_logger_writing_access_lines()
    # gunicorn's own error answer: no header of the service, and a bare environ.
    response = SimpleNamespace(status="500 Internal Server Error", sent=0, headers=[])
    for error in (RequestTimeout("timed out", request_id="req-late"), ValueError("other")):
        try:
            raise error
        except (RequestTimeout, ValueError):
            gunicorn_logger.access(response, None, {}, timedelta(seconds=30))
    timed_out, other = json_lines(capsys.readouterr().out)[-2:]
    assert timed_out["http.request.id"] == "req-late"
    assert "http.request.id" not in other  # "-": no request id to tell


def test_gunicorn_errors_are_logged_once_except_a_request_timeout_told_already(capsys):
    configure_logging(make_settings())
    gunicorn_logger = gunicorn_logger_writing_access_lines()
    capsys.readouterr()
    try:
        raise ValueError("handler broke")
    except ValueError:
        gunicorn_logger.exception("Error handling request %s", "/orders")
    try:
        raise RequestTimeout("timed out", request_id="req-late")
    except RequestTimeout:
        gunicorn_logger.exception("Error handling request %s", "/slow")
    [record] = json_lines(capsys.readouterr().out)
    assert record["message"] == "Error handling request /orders"
    assert record["log.logger"] == "gunicorn.error"
    assert record["log.level"] == "error"
    assert record["error.type"] == "ValueError"


def test_an_exception_handed_to_gunicorns_logger_outside_an_except_block_is_kept(capsys):
    configure_logging(make_settings())
    gunicorn_logger = gunicorn_logger_writing_access_lines()
    capsys.readouterr()
    try:
        raise ValueError("caught earlier")
    except ValueError as caught:
        error = caught
    # A server hook may log an error it kept: the keyword arguments reach logging as given.
    gunicorn_logger.exception("hook failed", exc_info=error)
    [record] = json_lines(capsys.readouterr().out)
    assert (record["error.type"], record["error.message"]) == ("ValueError", "caught earlier")


def test_an_answer_the_app_never_started_is_logged_without_a_status(capsys):
    # gunicorn's threaded worker logs the request even when the app raised before
    # start_response: the response then has no status at all.
    configure_logging(make_settings())
    response = SimpleNamespace(status=None, sent=0, headers=[])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/broken", "REMOTE_ADDR": "127.0.0.1"}
    gunicorn_logger_writing_access_lines().access(response, None, environ, timedelta(0))
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["url.path"] == "/broken"
    assert record["http.response.status_code"] is None


def test_a_text_line_is_followed_by_its_traceback_once(capsys):
    configure_logging(make_settings(log_format="text"))
    try:
        raise ValueError("bad input")
    except ValueError:
        logger.exception("request failed")
        traceback_text = "".join(traceback.format_exception(*sys.exc_info()))
    first_line, rest = capsys.readouterr().out.split("\n", 1)
    assert first_line.endswith(" - request failed")
    assert rest == traceback_text


def test_a_carriage_return_cannot_rewrite_a_text_line(capsys):
    configure_logging(make_settings(log_format="text"))
    # A terminal would go back to the start of the line and print over it.
    logger.info("agent: curl\rERROR | admin logged in")
    output = capsys.readouterr().out
    assert "\r" not in output
    assert "curl\\rERROR" in output


def test_a_text_line_shows_the_milliseconds_of_its_time(capsys):
    configure_logging(make_settings(log_format="text"))
    # 0.050 s: a wrong divisor or a lost zero padding shows in these digits.
    logged_at = datetime(2024, 5, 6, 7, 8, 9, 50_000, tzinfo=UTC)
    logger.patch(lambda record: record.update(time=logged_at)).info("at a known time")
    assert capsys.readouterr().out.startswith("2024-05-06 07:08:09.050 | INFO     | ")


def test_zip_compression_makes_real_deflated_archives_of_the_rotated_files(tmp_path):
    log_file = tmp_path / "logs" / "service.log"
    log_rotating_lines(log_file, "zip", 100)

    archives = sorted(log_file.parent.glob("*.zip"))
    assert len(archives) >= 3
    # Nothing else is left behind: no half-written archive, no uncompressed rotated file.
    assert set(os.listdir(log_file.parent)) == {log_file.name, *(a.name for a in archives)}
    lines = []
    for archive in archives:
        assert zipfile.is_zipfile(archive)
        with zipfile.ZipFile(archive) as zipped:
            [member] = zipped.infolist()
            assert member.filename == archive.name.removesuffix(".zip")  # the rotated file
            assert member.compress_type == zipfile.ZIP_DEFLATED
            lines.extend(zipped.read(member).decode("utf-8").splitlines())
    lines.extend(log_file.read_text(encoding="utf-8").splitlines())
    messages = [ecs_record(line)["message"] for line in lines]
    assert sorted(messages) == sorted(f"line {number}" for number in range(100))


def test_console_lines_that_cannot_be_written_are_counted_for_the_console(monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write fails (EPIPE)
    stdout = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    counted = []
    configure_logging(make_settings(), count_lost_lines=lambda *loss: counted.append(loss))
    logger.info("nobody reads this")
    logger.remove()  # waits for the console's thread to try the line
    with suppress(BrokenPipeError):  # the line it still buffers cannot be written either
        stdout.close()
    assert counted == [("console", "write_error", 1)]
