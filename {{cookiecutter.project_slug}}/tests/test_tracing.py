import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import tracing
from {{ cookiecutter.package_name }}.settings import (
    SERVICE_NAME,
    SettingsError,
    load_settings,
)

from .conftest import capture_log_records, get, make_settings
from .otlp_receiver import OtlpReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def collector():
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


def traced_app(collector: OtlpReceiver, **settings) -> Flask:
    return create_app(make_settings(otel_exporter_otlp_endpoint=collector.endpoint, **settings))


def exported(app: Flask, collector: OtlpReceiver) -> list[dict]:
    """Stop the app's tracing, which exports every span it holds, and return the server spans."""
    app.extensions["tracing"].stop()
    return collector.server_spans()


def test_one_span_per_request_named_by_its_route(collector):
    app = traced_app(collector)
    client = app.test_client()
    assert client.get("/api/items/7").status_code == 200
    assert client.get("/api/items/5000").status_code == 404
    assert client.get("/api/fail").status_code == 500

    spans = exported(app, collector)
    assert [span["name"] for span in spans] == [
        "GET /api/items/<int:item_id>", "GET /api/items/<int:item_id>", "GET /api/fail",
    ]  # fmt: skip
    assert [status_code(span) for span in spans] == [200, 404, 500]
    assert spans[-1]["status"] == 2  # STATUS_CODE_ERROR: a 5xx failed the request
    assert {span["resource"]["service.name"] for span in spans} == {SERVICE_NAME}


def status_code(span: dict) -> object:
    attributes = span["attributes"]
    return attributes.get("http.response.status_code", attributes.get("http.status_code"))


def test_a_url_that_matches_no_route_is_named_by_its_method_only(collector):
    app = traced_app(collector)
    app.test_client().get("/no/such/page/12345")
    [span] = exported(app, collector)
    assert span["name"] == "GET"


def test_an_incoming_traceparent_is_continued(collector):
    app = traced_app(collector)
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    app.test_client().get("/api/items/1", headers={"traceparent": traceparent})
    [span] = exported(app, collector)
    assert span["trace_id"] == TRACE_ID
    assert span["parent_span_id"] == PARENT_SPAN_ID


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{'0' * 32}-{PARENT_SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID[:-1]}-{PARENT_SPAN_ID}-01",  # a digit short
        f"ff-{TRACE_ID}-{PARENT_SPAN_ID}-01",  # version ff is invalid
        "not a traceparent",
        "00-" + "x" * 8000,
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(collector, traceparent):
    app = traced_app(collector)
    headers = {"traceparent": traceparent}
    assert app.test_client().get("/api/items/1", headers=headers).status_code == 200
    [span] = exported(app, collector)
    assert span["trace_id"] != TRACE_ID
    assert span["parent_span_id"] == ""


def test_a_malformed_tracestate_is_ignored_and_the_trace_continued(collector):
    app = traced_app(collector)
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01", "tracestate": "=,;=\x7f" * 200}
    assert app.test_client().get("/api/items/1", headers=headers).status_code == 200
    [span] = exported(app, collector)
    assert (span["trace_id"], span["parent_span_id"]) == (TRACE_ID, PARENT_SPAN_ID)


def test_every_log_line_of_the_request_carries_the_span_ids(collector, capsys):
    app = traced_app(collector)
    log_records = capture_log_records(capsys)
    app.test_client().get("/api/items/7", headers={"X-Request-ID": "traced-7"})
    [span] = exported(app, collector)
    [line] = [record for record in log_records() if record.get("http.request.id") == "traced-7"]
    assert (line["trace.id"], line["span.id"]) == (span["trace_id"], span["span_id"])


def test_lines_outside_a_request_carry_no_span_ids(collector, capsys):
    app = traced_app(collector)
    log_records = capture_log_records(capsys)
    app.logger.info("between requests")
    [line] = log_records()
    assert "trace.id" not in line
    assert "span.id" not in line


def test_the_ratio_samples_new_traces_and_callers_decide_for_theirs(collector):
    app = traced_app(collector, otel_traces_sampler_arg=0.0)
    client = app.test_client()
    for _ in range(20):
        client.get("/api/items/1")
    client.get("/api/items/2", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"})
    client.get("/api/items/3", headers={"traceparent": f"00-{'1' * 32}-{PARENT_SPAN_ID}-00"})
    spans = exported(app, collector)
    assert [span["trace_id"] for span in spans] == [TRACE_ID]


def test_a_ratio_keeps_about_that_share_of_new_traces(collector):
    app = traced_app(collector, otel_traces_sampler_arg=0.5)
    client = app.test_client()
    for _ in range(200):
        client.get("/api/items/1")
    # The ratio applies to random trace ids: 100 expected, 4 standard deviations either side.
    assert 72 <= len(exported(app, collector)) <= 128


def test_ids_of_unsampled_requests_are_logged_all_the_same(collector, capsys):
    app = traced_app(collector, otel_traces_sampler="always_off")
    log_records = capture_log_records(capsys)
    app.test_client().get("/api/items/7", headers={"X-Request-ID": "unsampled-7"})
    [line] = [record for record in log_records() if record.get("http.request.id") == "unsampled-7"]
    assert len(line["trace.id"]) == 32
    assert len(line["span.id"]) == 16
    assert exported(app, collector) == []


def test_probes_are_not_traced(collector):
    app = traced_app(collector)
    client = app.test_client()
    for path in ("/livez", "/readyz", "/healthz", "/api/items/1"):
        assert client.get(path).status_code == 200
    assert [span["name"] for span in exported(app, collector)] == ["GET /api/items/<int:item_id>"]


def test_outgoing_calls_carry_the_trace_downstream(collector):
    downstream = HeaderRecorder()
    app = traced_app(collector)

    @app.get("/call-downstream")
    def call_downstream():
        urllib.request.urlopen(downstream.url, timeout=5).close()
        return "called"

    try:
        assert app.test_client().get("/call-downstream").status_code == 200
    finally:
        downstream.stop()
    [server_span] = exported(app, collector)
    [traceparent] = downstream.traceparents
    _, trace_id, parent_id, _ = traceparent.split("-")
    assert trace_id == server_span["trace_id"]
    [client_span] = [span for span in collector.spans if span["kind"] == 3]  # SPAN_KIND_CLIENT
    assert parent_id == client_span["span_id"]
    assert client_span["parent_span_id"] == server_span["span_id"]


class HeaderRecorder:
    """A downstream service that records the traceparent of each request."""

    def __init__(self):
        self.traceparents: list[str] = []
        recorded = self.traceparents

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorded.append(self.headers.get("traceparent", ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/downstream"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_without_an_endpoint_nothing_is_traced(client, capsys):
    log_records = capture_log_records(capsys)
    client.get("/api/items/7", headers={"X-Request-ID": "untraced-7"})
    assert "tracing" not in client.application.extensions
    [line] = [record for record in log_records() if record.get("http.request.id") == "untraced-7"]
    assert "span.id" not in line
    assert len(line["trace.id"]) == 32


def test_a_refusing_collector_costs_the_spans_it_refused_and_no_request(collector, capsys):
    collector.answer = 400
    app = traced_app(collector)
    log_records = capture_log_records(capsys)
    for _ in range(5):
        assert app.test_client().get("/api/items/1").status_code == 200
    dropped = count_dropped(app)
    exported(app, collector)
    assert dropped == {"export_failed": 5}
    messages = [record["message"] for record in log_records()]
    assert "tracing: dropping spans (export_failed) until the collector takes them" in messages


def test_a_full_queue_drops_the_newest_spans_and_counts_them(collector, monkeypatch):
    monkeypatch.setattr(tracing, "MAX_QUEUED_SPANS", 3)
    app = traced_app(collector)
    dropped = count_dropped(app)
    collector.hold()  # a stalled collector: one batch in its hands, the queue fills behind it
    for _ in range(10):
        assert app.test_client().get("/api/items/1").status_code == 200
    collector.release()
    exported_spans = exported(app, collector)
    assert dropped["queue_full"] >= 10 - 2 * 3
    assert len(exported_spans) + dropped["queue_full"] == 10


def test_a_stalled_collector_holds_a_stopping_worker_for_the_export_timeout_only(
    collector, monkeypatch
):
    monkeypatch.setattr(tracing, "EXPORT_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(tracing, "STOP_GRACE_SECONDS", 0.5)
    app = traced_app(collector)
    dropped = count_dropped(app)
    collector.hold()  # answers nothing until the test ends
    for _ in range(5):
        app.test_client().get("/api/items/1")
    started = time.monotonic()
    app.extensions["tracing"].stop()
    assert time.monotonic() - started < 4 * tracing.EXPORT_TIMEOUT_SECONDS
    assert dropped == {"export_failed": 5}


def count_dropped(app: Flask) -> dict[str, int]:
    dropped: dict[str, int] = {}

    def count(_app, reason: str, count: int) -> None:
        dropped[reason] = dropped.get(reason, 0) + count

    tracing.spans_dropped.connect(count, app, weak=False)
    return dropped


def test_resource_attributes_and_service_name_come_from_the_environment(collector):
    app = traced_app(
        collector,
        otel_resource_attributes="team=payments,region=eu%2Dwest , service.name=ignored",
        otel_service_name="checkout",
    )
    app.test_client().get("/api/items/1")
    [span] = exported(app, collector)
    assert span["resource"]["team"] == "payments"
    assert span["resource"]["region"] == "eu-west"
    assert span["resource"]["service.name"] == "checkout"
    assert span["resource"]["deployment.environment.name"] == "development"


def test_the_traces_endpoint_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert load_settings().otel_traces_url == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example.com/in")
    assert load_settings().otel_traces_url == "https://traces.example.com/in"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert load_settings().otel_traces_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team"),
        ("OTEL_RESOURCE_ATTRIBUTES", "=payments"),
        ("OTEL_SDK_DISABLED", "maybe"),
    ],
)
def test_a_bad_value_is_a_settings_error_naming_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"invalid setting {name}="):
        load_settings()


def test_under_gunicorn_every_span_is_exported_by_the_time_workers_stop(
    gunicorn, collector, tmp_path
):
    server = gunicorn(workers=2, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint)
    for item_id in range(30):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    server.stop()  # SIGTERM: each worker exports what it holds before it exits

    spans = collector.server_spans()
    assert sorted(span["attributes"]["http.target"] for span in spans) == sorted(
        f"/api/items/{item_id}" for item_id in range(30)
    )
    log_lines = (tmp_path / "logs" / "service.log").read_text().splitlines()
    access = [
        line for line in map(json.loads, log_lines)
        if line["log.logger"] == "gunicorn.access" and line["url.path"].startswith("/api/")
    ]  # fmt: skip
    assert {(line["trace.id"], line["span.id"]) for line in access} == {
        (span["trace_id"], span["span_id"]) for span in spans
    }
