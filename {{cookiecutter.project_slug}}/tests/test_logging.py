import gzip
import json
import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from loguru import logger

from {{ cookiecutter.package_name }}.observability.logging import (
    GunicornLogger,
    configure_logging,
    ensure_logging,
    finish_compressions,
)
from {{ cookiecutter.package_name }}.settings import SettingsError

from .conftest import make_settings


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


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


def test_standard_logging_goes_through_loguru(capsys):
    configure_logging(make_settings())
    logging.getLogger("werkzeug").warning("from a library")
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["message"] == "from a library"
    assert record["log.logger"] == "werkzeug"
    assert record["log.level"] == "warning"


def test_log_level_filters(capsys):
    configure_logging(make_settings(log_level="WARNING"))
    logger.info("quiet")
    logger.warning("loud")
    messages = [record["message"] for record in json_lines(capsys.readouterr().out)]
    assert messages == ["loud"]


def test_text_format_cannot_be_forged_with_newlines(capsys):
    configure_logging(make_settings(log_format="text"))
    logger.info("agent: curl\nFORGED | ERROR | admin logged in")
    output = capsys.readouterr().out
    assert len(output.strip().splitlines()) == 1
    assert "curl\\nFORGED" in output


def test_file_sink_rotates_compresses_and_keeps_every_line(tmp_path):
    log_file = tmp_path / "logs" / "service.log"
    configure_logging(
        make_settings(log_file=log_file, log_rotation="2 KB", log_retention="100",
                      log_compression="gz")
    )  # fmt: skip
    for number in range(200):
        logger.info("line {}", number)
    logger.remove()  # closes the file
    finish_compressions()

    files = sorted(path.name for path in log_file.parent.iterdir())
    assert sum(name.endswith(".gz") for name in files) >= 5
    messages = [json.loads(line)["message"] for line in read_all_log_files(log_file.parent)]
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
    with pytest.raises(SettingsError, match="LOG_FILE"):
        configure_logging(make_settings(log_file=not_a_folder / "service.log"))


def test_logging_set_up_by_gunicorn_is_not_redone_by_the_app(tmp_path):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    configure_logging(make_settings(log_file=first))
    ensure_logging(make_settings(log_file=second))
    logger.info("where does this go?")
    logger.remove()
    assert "where does this go?" in first.read_text()
    assert not second.exists()


def test_gunicorn_access_lines_are_structured(capsys):
    configure_logging(make_settings())
    gunicorn_logger = GunicornLogger(Config())
    gunicorn_logger.cfg.set("accesslog", "-")
    gunicorn_logger.setup(gunicorn_logger.cfg)
    response = SimpleNamespace(status="404 NOT FOUND", sent=9, headers=[("X-Request-ID", "req-1")])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/nothing", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_USER_AGENT": "probe\nFORGED"}  # fmt: skip
    gunicorn_logger.access(response, None, environ, timedelta(milliseconds=12))
    record = json_lines(capsys.readouterr().out)[-1]
    assert record["log.logger"] == "gunicorn.access"
    assert record["http.request.id"] == "req-1"
    assert record["http.response.status_code"] == 404
    assert record["url.path"] == "/nothing"
    assert record["event.duration"] == 12_000_000
    assert record["user_agent.original"] == "probe\nFORGED"  # kept, but JSON-escaped on one line
