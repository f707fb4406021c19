import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask, Response, request
from flask.testing import FlaskClient
from opentelemetry import trace
from opentelemetry.instrumentation.urllib import URLLibInstrumentor
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import tracing
from {{ cookiecutter.package_name }}.observability.health import (
    register_readiness_check,
)
from {{ cookiecutter.package_name }}.observability.request_context import (
    REQUEST_IDS_KEY,
)
from {{ cookiecutter.package_name }}.observability.timeouts import (
    RequestTimeout,
    end_timed_out_request,
)
from {{ cookiecutter.package_name }}.settings import (
    SERVICE_NAME,
    SettingsError,
    load_settings,
)

from . import impatient_tracing_app
from .conftest import capture_log_records, get, make_settings, run_script, wait_until
from .otlp_receiver import OtlpReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def collector():
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


def traced_app(collector: OtlpReceiver, **settings) -> Flask:
    app = create_app(make_settings(otel_exporter_otlp_endpoint=collector.endpoint, **settings))
    app.test_client_class = ReadingWholeAnswers
    return app


class ReadingWholeAnswers(FlaskClient):
    """A request's span ends once the server has sent the whole answer: this client reads it
    all, as gunicorn does, instead of leaving it to be read (or dropped) later."""

    def open(self, *args, buffered: bool = True, **kwargs) -> TestResponse:
        return super().open(*args, buffered=buffered, **kwargs)


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
    assert [span["attributes"]["http.response.status_code"] for span in spans] == [200, 404, 500]
    assert spans[0]["attributes"]["url.path"] == "/api/items/7"  # given as the span starts
    assert spans[0]["attributes"]["http.request.method"] == "GET"
    assert "http.target" not in spans[0]["attributes"]  # the old conventions' name
    assert {span["attributes"]["http.route"] for span in spans} == {
        "/api/items/<int:item_id>", "/api/fail",
    }  # fmt: skip
    assert spans[-1]["status"] == 2  # STATUS_CODE_ERROR: a 5xx failed the request
    [error] = spans[-1]["events"]
    assert (error["name"], error["exception.type"]) == ("exception", "RuntimeError")
    assert error["exception.message"] == "failure requested by /api/fail"
    assert spans[0]["events"] == []
    assert {span["resource"]["service.name"] for span in spans} == {SERVICE_NAME}


def test_a_url_that_matches_no_route_is_named_by_its_method_only(collector):
    app = traced_app(collector)
    app.test_client().get("/no/such/page/12345")
    [span] = exported(app, collector)
    assert span["name"] == "GET"
    assert "http.route" not in span["attributes"]


def test_a_request_that_the_worker_timeout_ends_is_exported_as_failed(collector):
    """gunicorn's timeout ends a request with a SystemExit, which passes by the middleware."""
    app = traced_app(collector)
    app.before_request(lambda: end_timed_out_request(timeout_seconds=7))
    with pytest.raises(RequestTimeout):
        app.test_client().get("/api/slow?ms=5")
    [span] = exported(app, collector)
    assert (span["name"], span["status"]) == ("GET /api/slow", 2)  # STATUS_CODE_ERROR
    [error] = span["events"]
    assert error["exception.type"] == f"{RequestTimeout.__module__}.RequestTimeout"


@pytest.mark.parametrize("path", ["/api/items/1", "/no/such/page/12345"])
def test_a_request_with_a_method_of_its_own_is_named_http(collector, path):
    """The conventions' name for any method they do not list: one name for all of them."""
    app = traced_app(collector)
    assert app.test_client().open(path, method="FROBNICATE").status_code in (404, 405)
    [span] = exported(app, collector)
    assert span["name"] == "HTTP"


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
    environ_ids = []  # where gunicorn's access line, written after the request, finds them

    def note_environ_ids(response: Response) -> Response:
        environ_ids.append(request.environ[REQUEST_IDS_KEY])
        return response

    app.after_request(note_environ_ids)
    log_records = capture_log_records(capsys)
    app.test_client().get("/api/items/7", headers={"X-Request-ID": "traced-7"})
    [span] = exported(app, collector)
    [line] = [record for record in log_records() if record.get("http.request.id") == "traced-7"]
    assert (line["trace.id"], line["span.id"]) == (span["trace_id"], span["span_id"])
    assert environ_ids == [("traced-7", span["trace_id"], span["span_id"])]


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


@pytest.mark.parametrize(
    ("sampler", "kept"),
    [
        ("always_on", ["/api/items/1", "/api/items/2", "/api/items/3"]),
        ("always_off", []),
        ("traceidratio", []),
        ("parentbased_always_on", ["/api/items/1", "/api/items/2"]),
        ("parentbased_always_off", ["/api/items/2"]),
        ("parentbased_traceidratio", ["/api/items/2"]),
    ],
)
def test_each_sampler_keeps_the_traces_its_name_says(collector, sampler, kept):
    app = traced_app(collector, otel_traces_sampler=sampler, otel_traces_sampler_arg=0.0)
    client = app.test_client()
    sampled, unsampled = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01", f"00-{'1' * 32}-{PARENT_SPAN_ID}-00"
    assert client.get("/api/items/1").status_code == 200  # a new trace
    assert client.get("/api/items/2", headers={"traceparent": sampled}).status_code == 200
    assert client.get("/api/items/3", headers={"traceparent": unsampled}).status_code == 200
    assert [span["attributes"]["url.path"] for span in exported(app, collector)] == kept


def test_spans_of_your_own_keep_their_attributes_and_follow_the_parent_they_are_given(
    collector,
):
    app = traced_app(collector, otel_traces_sampler="parentbased_always_off")
    tracer = app.extensions["tracing"].provider.get_tracer("orders")
    caller = trace.SpanContext(
        int(TRACE_ID, 16), int(PARENT_SPAN_ID, 16), is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )  # fmt: skip
    parent = trace.set_span_in_context(trace.NonRecordingSpan(caller))
    tracer.start_span("reserve stock", context=parent, attributes={"order.id": 7}).end()
    app.extensions["tracing"].stop()
    [span] = collector.spans
    assert span["trace_id"] == TRACE_ID
    assert span["attributes"] == {"order.id": 7}


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


def test_calls_that_a_probe_makes_are_not_traced_either(collector):
    """A readiness check that asks a dependency over HTTP, at every probe of every pod."""
    downstream = HeaderRecorder()
    app = traced_app(collector)

    def ask_downstream() -> None:
        urllib.request.urlopen(downstream.url).close()

    register_readiness_check(app, "downstream", ask_downstream)
    try:
        assert app.test_client().get("/readyz").status_code == 200
    finally:
        downstream.stop()
    app.extensions["tracing"].stop()
    assert collector.spans == []
    assert downstream.traceparents == [""]


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


def test_a_stopping_worker_gives_up_on_a_stalled_collector_instead_of_trying_each_batch(
    collector, monkeypatch
):
    monkeypatch.setattr(tracing, "EXPORT_TIMEOUT_SECONDS", 2.0)
    monkeypatch.setattr(tracing, "STOP_GRACE_SECONDS", 0.2)
    monkeypatch.setattr(tracing, "EXPORT_BATCH_SIZE", 1)
    app = traced_app(collector)
    dropped = count_dropped(app)
    collector.hold()  # answers nothing until the test ends
    for _ in range(3):
        app.test_client().get("/api/items/1")
    app.extensions["tracing"].stop()
    assert collector.export_requests == 1, "the batches behind the stalled one are not sent"
    assert dropped == {"export_failed": 3}


def test_a_span_that_ends_while_its_worker_stops_is_counted(collector, monkeypatch):
    """A request of another thread (gthread workers) may end after the export queue closed."""
    monkeypatch.setattr(tracing, "EXPORT_TIMEOUT_SECONDS", 2.0)
    monkeypatch.setattr(tracing, "STOP_GRACE_SECONDS", 0.2)
    app = traced_app(collector)
    dropped = count_dropped(app)
    collector.hold()  # answers nothing until the test ends
    app.test_client().get("/api/items/1")
    stopping = threading.Thread(target=app.extensions["tracing"].stop)
    stopping.start()
    deadline = time.monotonic() + 60
    while collector.export_requests == 0:  # the queue is closed once its last export is sent
        assert time.monotonic() < deadline, "the stop sent nothing"
        time.sleep(0.01)
    app.test_client().get("/api/items/2")
    stopping.join(timeout=60)
    assert dropped == {"export_failed": 1, "not_exported_at_stop": 1}


def test_the_log_says_once_that_spans_are_dropped_and_once_that_they_arrive_again(
    collector, capsys
):
    app = traced_app(collector)
    client = app.test_client()
    provider = app.extensions["tracing"].provider
    log_records = capture_log_records(capsys)

    def export_requests(count: int, answer: int) -> None:
        collector.answer = answer
        for _ in range(count):
            client.get("/api/items/1")
        provider.force_flush()

    export_requests(2, answer=400)
    export_requests(3, answer=400)  # dropped too, said no second time
    export_requests(1, answer=200)
    export_requests(1, answer=400)  # an outage after the recovery is said again
    messages = [
        record["message"] for record in log_records() if record["message"].startswith("tracing:")
    ]
    assert messages == [
        "tracing: dropping spans (export_failed) until the collector takes them",
        "tracing: exporting again, 5 spans were dropped",
        "tracing: dropping spans (export_failed) until the collector takes them",
    ]


def test_a_script_exports_its_spans_at_exit_and_its_own_spans_join_them(collector, tmp_path):
    """Outside gunicorn nothing calls stop: the provider exports at exit. The first app's
    provider is the global one, which spans of your own use."""
    script = (
        "from opentelemetry import trace\n"
        "from {{ cookiecutter.package_name }}.app import create_app\n"
        "app = create_app()\n"
        "with trace.get_tracer('nightly').start_as_current_span('nightly job'):\n"
        "    assert app.test_client().get('/api/items/1').status_code == 200\n"
    )
    run_script(
        script, tmp_path, APP_ENV="development", OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint
    )
    spans = {span["name"]: span for span in collector.spans}
    assert set(spans) == {"nightly job", "GET /api/items/<int:item_id>"}
    server = spans["GET /api/items/<int:item_id>"]
    assert server["parent_span_id"] == spans["nightly job"]["span_id"]


def test_the_environment_chooses_the_conventions_of_the_attributes(collector, tmp_path):
    """http/dup: the old names beside the stable ones, for a backend that knows only those."""
    script = (
        "from {{ cookiecutter.package_name }}.app import create_app\n"
        "assert create_app().test_client().get('/api/items/1').status_code == 200\n"
    )
    run_script(
        script, tmp_path, APP_ENV="development", OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_SEMCONV_STABILITY_OPT_IN="http/dup",
    )  # fmt: skip
    [span] = collector.server_spans()
    assert span["attributes"]["http.target"] == span["attributes"]["url.path"] == "/api/items/1"


def test_the_environment_cannot_shrink_the_export_queue_below_its_bound(collector, monkeypatch):
    """The SDK reads OTEL_BSP_MAX_QUEUE_SIZE; the queue's bound is MAX_QUEUED_SPANS, counted."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2")
    app = traced_app(collector)
    collector.hold()
    for _ in range(5):
        assert app.test_client().get("/api/items/1").status_code == 200
    collector.release()
    assert len(exported(app, collector)) == 5


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


@pytest.fixture
def untraced_requests():
    """This process's own requests to the service carry no trace context. urllib here is
    instrumented with the newest app's provider (see _instrument_http_clients): after a test
    whose app samples nothing, its unsampled traceparent would make the service's
    parent-based sampler drop every span of the test."""
    urllib_instrumentor = URLLibInstrumentor()
    if urllib_instrumentor.is_instrumented_by_opentelemetry:
        urllib_instrumentor.uninstrument()


def test_under_gunicorn_every_span_is_exported_by_the_time_workers_stop(
    gunicorn, collector, tmp_path, untraced_requests
):
    server = gunicorn(workers=2, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint)
    for item_id in range(30):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    server.stop()  # SIGTERM: each worker exports what it holds before it exits

    spans = collector.server_spans()
    targets = sorted(span["attributes"]["url.path"] for span in spans)
    expected = sorted(f"/api/items/{item_id}" for item_id in range(30))
    assert targets == expected, server.output.read_text()[-3000:]  # what the workers said
    log_lines = (tmp_path / "logs" / "service.log").read_text().splitlines()
    access = [
        line for line in map(json.loads, log_lines)
        if line["log.logger"] == "gunicorn.access" and line["url.path"].startswith("/api/")
    ]  # fmt: skip
    assert {(line["trace.id"], line["span.id"]) for line in access} == {
        (span["trace_id"], span["span_id"]) for span in spans
    }


def test_under_gunicorn_a_stopping_worker_gives_up_on_the_batches_behind_a_stalled_one(
    gunicorn, collector, untraced_requests
):
    server = gunicorn(
        workers=1, app=impatient_tracing_app.APP, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint
    )
    collector.hold()  # answers nothing until the test ends
    for _ in range(3):  # three batches of one span
        assert get(f"{server.url}/api/items/1")[0] == 200
    # The first batch stalled, the two others waiting behind it: the worker is stopped then.
    wait_until(lambda: collector.export_requests, "the first export")
    server.stop()
    # Without the worker's own stop, the SDK's exit handler would try each batch in turn.
    assert collector.export_requests == 1
