"""A request ended by gunicorn's worker timeout is reported as a timeout, with its request id."""

import re
import time

import pytest

from {{ cookiecutter.package_name }}.observability.timeouts import (
    RequestTimeout,
    end_timed_out_request,
    request_timed_out,
)

from . import stuck_app
from .conftest import capture_log_records, get
from .ecs import ecs_records


def test_outside_a_request_the_abort_is_left_to_gunicorn():
    assert end_timed_out_request(timeout_seconds=30) is None


def test_a_request_stuck_before_it_had_an_id_is_ended_all_the_same(app):
    with app.test_request_context("/api/slow?ms=5"), pytest.raises(RequestTimeout) as ended:
        end_timed_out_request(timeout_seconds=7)  # before_request never ran
    assert ended.value.request_id == "-"


def test_the_stuck_request_is_logged_and_ended_with_its_request_id(app, capsys):
    log_records = capture_log_records(capsys)
    timed_out_routes = []

    def note(_sender, route):
        timed_out_routes.append(route)

    request_timed_out.connect(note, app)
    # The worker timeout strikes once the request has run a while, after the service's hooks.
    app.before_request(lambda: time.sleep(0.2) or end_timed_out_request(timeout_seconds=7))
    with pytest.raises(
        RequestTimeout, match=r"^GET /api/slow ran \d+\.\d s, past the 7 s worker timeout$"
    ) as ended:
        app.test_client().get("/api/slow?ms=5", headers={"X-Request-ID": "stuck-1"})

    assert isinstance(ended.value, SystemExit)  # how gunicorn expects an aborted worker to end
    assert ended.value.request_id == "stuck-1"
    assert timed_out_routes == ["/api/slow"]
    [record] = [r for r in log_records() if r["message"].startswith("request timed out")]
    assert record["http.request.id"] == "stuck-1"
    assert record["http.route"] == "/api/slow"
    assert record["log.level"] == "error"
    ran = re.fullmatch(
        r"request timed out: GET /api/slow ran (\d+\.\d) s, past the 7 s worker timeout;"
        r" the worker restarts",
        record["message"],
    )
    assert ran, record["message"]
    assert 0.2 <= float(ran.group(1)) < 5
    assert 200_000_000 <= record["event.duration"] < 5_000_000_000
    assert (record["http.request.method"], record["url.path"]) == ("GET", "/api/slow")


def test_a_request_past_the_worker_timeout_leaves_one_line_and_a_new_worker(gunicorn, tmp_path):
    server = gunicorn(workers=2, app=stuck_app.APP, GUNICORN_TIMEOUT="1")
    started = time.monotonic()
    status, _, _ = get(
        f"{server.url}/stuck", {"X-Request-ID": "stuck-2"}, timeout=stuck_app.STUCK_SECONDS
    )
    waited = time.monotonic() - started
    assert status == 500
    assert get(f"{server.url}/api/items/1")[0] == 200  # the worker was replaced
    server.stop()

    records = ecs_records((tmp_path / "logs" / "service.log").read_text())
    stuck = [record for record in records if record.get("http.request.id") == "stuck-2"]
    assert sorted(record["log.logger"] for record in stuck) == sorted(
        [
            "gunicorn.access",
            "{{ cookiecutter.package_name }}.observability.timeouts",
        ]
    )
    access_line = next(record for record in stuck if record["log.logger"] == "gunicorn.access")
    assert (access_line["url.path"], access_line["http.response.status_code"]) == ("/stuck", 500)
    timeout_line = next(record for record in stuck if "timed out" in record["message"])
    assert timeout_line["http.route"] == "/stuck"
    # gunicorn writes the access line from an environ of its own: no trace ids, or the request's.
    for field in ("trace.id", "span.id"):
        assert access_line.get(field) in (None, timeout_line.get(field)), field
    # From the request's start, which comes a little after the worker's last sign of life
    # that the timeout counts from, to its end, which the client saw.
    assert 100_000_000 < timeout_line["event.duration"] < waited * 1_000_000_000
    assert not [record for record in records if "Error handling request" in record["message"]]
