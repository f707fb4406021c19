import pytest
from loguru import logger

from {{ cookiecutter.package_name }}.observability.request_context import (
    random_id,
)

from .conftest import capture_log_records, from_forked_child

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_safe_request_id_is_kept_and_echoed(client):
    response = client.get("/", headers={"X-Request-ID": "order-42.retry_1"})
    assert response.headers["X-Request-ID"] == "order-42.retry_1"


def test_a_request_id_is_made_when_none_is_sent(client):
    first = client.get("/").headers["X-Request-ID"]
    second = client.get("/").headers["X-Request-ID"]
    assert len(first) == 32
    assert first != second


def test_workers_forked_from_one_master_make_different_ids():
    _, worker_id = from_forked_child(random_id)  # the worker's first id
    master_id = random_id()
    assert len(worker_id) == len(master_id) == 32
    assert worker_id != master_id


@pytest.mark.parametrize("safe", ["a" * 128, "AZaz09._:-", "7"])
def test_a_request_id_up_to_128_safe_characters_is_kept(client, safe):
    assert client.get("/", headers={"X-Request-ID": safe}).headers["X-Request-ID"] == safe


@pytest.mark.parametrize(
    "unsafe",
    ["a" * 129, "id with spaces", "id\tforged", "<script>", 'id"quote', "id%0aforged", ""],
)
def test_an_unsafe_request_id_is_replaced(client, unsafe):
    echoed = client.get("/", headers={"X-Request-ID": unsafe}).headers["X-Request-ID"]
    assert echoed != unsafe
    assert len(echoed) == 32


def test_request_and_trace_ids_are_in_every_log_line_of_the_request(client, capsys):
    log_records = capture_log_records(capsys)
    client.get(
        "/api/items/7",
        headers={"X-Request-ID": "req-7", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    )
    [record] = [record for record in log_records() if record["message"] == "item 7 served"]
    assert record["http.request.id"] == "req-7"
    assert record["trace.id"] == TRACE_ID


def test_an_invalid_traceparent_starts_a_new_trace(client, capsys):
    log_records = capture_log_records(capsys)
    client.get("/api/items/8", headers={"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"})
    [record] = [record for record in log_records() if record["message"] == "item 8 served"]
    assert len(record["trace.id"]) == 32
    assert record["trace.id"] != "0" * 32


def test_the_answer_carries_one_request_id_the_services(app):
    app.add_url_rule("/own-id", view_func=lambda: ("", 204, {"X-Request-ID": "the-views"}))
    response = app.test_client().get("/own-id", headers={"X-Request-ID": "req-9"})
    assert response.headers.getlist("X-Request-ID") == ["req-9"]


def test_log_lines_outside_a_request_carry_no_request_id(app, capsys):
    log_records = capture_log_records(capsys)
    app.test_client().get("/", headers={"X-Request-ID": "req-before"})
    log_records()  # the request's own lines
    logger.info("background work")
    [record] = log_records()
    assert record["message"] == "background work"
    assert "http.request.id" not in record
    assert "trace.id" not in record
