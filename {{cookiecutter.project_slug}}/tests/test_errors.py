import copy
import gzip
import json
import logging
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk
from flask import request
from loguru import logger

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability.errors import (
    FILTERED,
    MAX_BODY_BYTES,
    MAX_BREADCRUMBS,
    _traces_sampler,
    scrub_event,
)
from {{ cookiecutter.package_name }}.observability.health import polled_paths
from {{ cookiecutter.package_name }}.settings import (
    SettingsError,
    load_settings,
)

from . import stuck_app
from .conftest import capture_log_records, get, make_settings, run_script, wait_until

SECRETS = {
    "Authorization": "Bearer secret-authorization-value",
    "Cookie": "session=secret-cookie-value",
    "X-Api-Key": "secret-api-key-value",
}
QUERY_TOKEN = "secret-query-token-value"  # noqa: S105
CARD = "4111 1111 1111 1111"  # a test card number, bound to a log line


def parse_envelope(body: bytes) -> list[tuple[dict, bytes]]:
    """Items of a Sentry envelope: a header line, then per item a header and a payload."""
    items = []
    _, _, rest = body.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, payload))
    return items


class EnvelopeServer:
    """Speaks enough of Sentry's ingestion protocol to receive events, on a free port."""

    def __init__(self):
        self.items: list[tuple[dict, bytes]] = []
        received = self.items

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received.extend(parse_envelope(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://public@127.0.0.1:{self.server.server_port}/42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self, item_type: str) -> list[bytes]:
        return [payload for header, payload in self.items if header.get("type") == item_type]

    def events(self) -> list[dict]:
        return [json.loads(payload) for payload in self.payloads("event")]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sentry_server():
    server = EnvelopeServer()
    yield server
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to a client that sends nothing
    server.stop()


@pytest.mark.parametrize("traces_sample_rate", [0.0, 1.0], ids=["errors-only", "tracing"])
def test_one_scrubbed_event_per_unhandled_exception(sentry_server, traces_sample_rate):
    app = create_app(
        make_settings(
            sentry_dsn=sentry_server.dsn,
            app_release="svc@1.2.3",
            sentry_traces_sample_rate=traces_sample_rate,
        )
    )
    response = app.test_client().get(
        f"/api/fail?token={QUERY_TOKEN}&page=2",
        headers={**SECRETS, "X-Request-ID": "failing-request-1"},
    )
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)

    events = sentry_server.payloads("event")
    assert len(events) == 1, "the error must not be reported twice (logging and Flask)"
    event = json.loads(events[0])
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["tags"]["request_id"] == "failing-request-1"
    assert event["release"] == "svc@1.2.3"
    assert event["environment"] == "development"
    raw = events[0].decode()
    for secret in (*SECRETS.values(), QUERY_TOKEN, "127.0.0.1"):
        assert secret not in raw
    assert "page=2" in event["request"]["query_string"]


def test_error_lines_and_client_errors_stay_out_of_sentry(sentry_server):
    client = create_app(make_settings(sentry_dsn=sentry_server.dsn)).test_client()
    logging.getLogger("payments").error("a plain error line from the standard library")
    logger.error("a plain error line from loguru")
    try:
        raise ValueError("handled, and logged")
    except ValueError:
        logging.getLogger("payments").exception("logged with its exception")
        logger.exception("logged with its exception")
    assert client.get("/api/items/5000").status_code == 404
    assert client.get("/api/slow?ms=soon").status_code == 400
    assert client.post("/api/items/1").status_code == 405
    assert client.get("/api/fail").status_code == 500  # the one thing that must arrive
    sentry_sdk.flush(timeout=5)

    events = sentry_server.events()
    assert [event["exception"]["values"][-1]["type"] for event in events] == ["RuntimeError"]


def test_probes_are_not_traced(sentry_server):
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn, sentry_traces_sample_rate=1.0))
    client = app.test_client()
    # The probes, and what other components poll (a metrics scrape), as they registered it.
    for path in ("/livez", "/readyz", *sorted(polled_paths(app)), "/api/items/1"):
        client.get(path)
    sentry_sdk.flush(timeout=5)
    transactions = [json.loads(payload) for payload in sentry_server.payloads("transaction")]
    names = [transaction["transaction"] for transaction in transactions]
    assert names == ["/api/items/<int:item_id>"]


def test_a_transaction_is_scrubbed_like_an_event(sentry_server):
    client = create_app(
        make_settings(sentry_dsn=sentry_server.dsn, sentry_traces_sample_rate=1.0)
    ).test_client()
    assert client.get(f"/api/items/1?token={QUERY_TOKEN}", headers=SECRETS).status_code == 200
    sentry_sdk.flush(timeout=5)
    [transaction] = sentry_server.payloads("transaction")
    for secret in (*SECRETS.values(), QUERY_TOKEN):
        assert secret not in transaction.decode()


def test_tracing_off_sends_no_transactions(sentry_server):
    app = create_app(
        make_settings(sentry_dsn=sentry_server.dsn, sentry_traces_sample_rate=0.0)
    ).test_client()
    app.get("/api/items/1")
    app.get("/api/fail")
    sentry_sdk.flush(timeout=5)
    assert sentry_server.payloads("transaction") == []
    assert len(sentry_server.payloads("event")) == 1


def test_with_tracing_off_services_called_keep_their_own_sampling(sentry_server):
    """Off here means no decision is passed on: a sampled flag of 0 in `sentry-trace` would
    stop the services this one calls from tracing these requests too. With no scope per
    request, a header would also carry one trace id for every request of the process."""
    received: list[tuple[str | None, str | None]] = []

    class Downstream(BaseHTTPRequestHandler):
        def do_GET(self):
            received.append((self.headers.get("sentry-trace"), self.headers.get("baggage")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    downstream = ThreadingHTTPServer(("127.0.0.1", 0), Downstream)
    threading.Thread(target=downstream.serve_forever, daemon=True).start()
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn, sentry_traces_sample_rate=0.0))

    @app.get("/call-downstream")
    def call_downstream():
        url = f"http://127.0.0.1:{downstream.server_port}/"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return "", answer.status

    try:
        assert app.test_client().get("/call-downstream").status_code == 204
    finally:
        downstream.shutdown()
        downstream.server_close()
    assert received == [(None, None)]


def test_with_tracing_off_a_request_that_does_not_fail_costs_sentry_nothing(sentry_server):
    """No Sentry middleware: no scope forked, no transaction started, no session counted."""
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn))
    scopes_in_requests = []

    @app.get("/scope")
    def scope():
        scopes_in_requests.append((sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_span()))
        return ""

    client = app.test_client()
    for path in ("/scope", "/api/items/1", "/api/items/5000", "/scope"):
        client.get(path)
    sentry_sdk.flush(timeout=5)
    process_scope = sentry_sdk.get_isolation_scope()
    assert scopes_in_requests == [(process_scope, None)] * 2
    assert sentry_server.items == [], "no transaction, session or event for these requests"


def test_an_event_names_the_route_and_carries_the_request(sentry_server):
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn))

    @app.post("/orders/<int:order_id>")
    def pay_order(order_id):
        raise RuntimeError(f"order {order_id} could not be paid")

    response = app.test_client().post(
        "/orders/17?page=2", json={"password": "secret-password-value", "amount": 30}
    )
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)
    [event] = sentry_server.events()
    assert event["transaction"] == "/orders/<int:order_id>"
    assert event["transaction_info"] == {"source": "route"}
    assert event["exception"]["values"][-1]["mechanism"] == {"type": "flask", "handled": False}
    assert event["request"]["method"] == "POST"
    assert event["request"]["url"] == "http://localhost/orders/17"
    assert event["request"]["query_string"] == "page=2"
    assert event["request"]["data"] == {"password": FILTERED, "amount": 30}
    assert event["request"]["headers"]["Content-Type"] == "application/json"


def test_an_error_before_any_route_matched_is_named_by_the_method_not_the_url(sentry_server):
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn))

    @app.before_request
    def fail_before_routing():
        if request.path.startswith("/nowhere"):
            raise RuntimeError("failed before routing")

    assert app.test_client().delete("/nowhere/4711").status_code == 500
    sentry_sdk.flush(timeout=5)
    [event] = sentry_server.events()
    assert event["transaction"] == "DELETE"


def test_the_log_lines_of_one_request_stay_out_of_the_next_requests_event(sentry_server, capsys):
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn))

    @app.get("/step/<int:number>")
    def step(number):
        logger.info("step {} began", number)
        if number:
            logger.warning("step {} is failing", number)
            raise RuntimeError(f"step {number} failed")
        return ""

    client = app.test_client()
    logger.info("a line outside any request")
    assert "Logging error" not in capsys.readouterr().err  # the sink is not asked to keep it
    sentry_sdk.add_breadcrumb(message="an outgoing call outside any request")  # process-wide
    assert client.get("/step/0").status_code == 200
    assert client.get("/step/1").status_code == 500
    assert client.get("/step/2").status_code == 500
    sentry_sdk.flush(timeout=5)

    events = sentry_server.events()
    breadcrumbs = [
        [crumb["message"] for crumb in event["breadcrumbs"]["values"]] for event in events
    ]
    assert breadcrumbs == [
        ["step 1 began", "step 1 is failing"],
        ["step 2 began", "step 2 is failing"],
    ]
    began, failing = events[0]["breadcrumbs"]["values"]
    assert {key: began[key] for key in ("type", "category", "level")} == {
        "type": "log", "category": __name__, "level": "info"
    }  # fmt: skip
    assert failing["level"] == "warning"
    assert began["timestamp"] <= failing["timestamp"]


def test_an_event_carries_the_last_lines_of_its_request_only(sentry_server):
    """What a request keeps for its event is bounded, however much it logs."""
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn))

    @app.get("/chatty")
    def chatty():
        for number in range(MAX_BREADCRUMBS + 50):
            logger.info("line {}", number)
        raise RuntimeError("failed after many lines")

    assert app.test_client().get("/chatty").status_code == 500
    sentry_sdk.flush(timeout=5)
    [event] = sentry_server.events()
    messages = [crumb["message"] for crumb in event["breadcrumbs"]["values"]]
    assert messages == [f"line {number}" for number in range(50, MAX_BREADCRUMBS + 50)]


@pytest.fixture
def failing_notes(sentry_server):
    """A client of the service with a route that fails on every note posted to it."""
    app = create_app(make_settings(sentry_dsn=sentry_server.dsn))

    @app.post("/notes")
    def add_note():
        raise RuntimeError("the note was not saved")

    return app.test_client()


@pytest.mark.parametrize(("size", "kept"), [(MAX_BODY_BYTES, True), (MAX_BODY_BYTES + 1, False)])
def test_a_form_body_is_in_the_event_up_to_its_size_limit(sentry_server, failing_notes, size, kept):
    body = "note=" + "x" * (size - len("note="))
    response = failing_notes.post(
        "/notes", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)
    [event] = sentry_server.events()
    if kept:  # Sentry shortens long values itself
        assert event["request"]["data"]["note"].startswith("xxxx")
    else:
        assert "data" not in event["request"]


def test_an_error_in_a_request_with_a_malformed_json_body_is_reported(sentry_server, failing_notes):
    response = failing_notes.post("/notes", data="{not json", content_type="application/json")
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)
    [event] = sentry_server.events()
    assert event["exception"]["values"][-1]["value"] == "the note was not saved"


def test_a_request_ended_by_the_worker_timeout_is_one_event_with_the_stuck_stack(
    sentry_server, gunicorn
):
    server = gunicorn(
        workers=2, app=stuck_app.APP, GUNICORN_TIMEOUT="1", SENTRY_DSN=sentry_server.dsn
    )
    status, _, _ = get(
        f"{server.url}/stuck", {"X-Request-ID": "stuck-3"}, timeout=stuck_app.STUCK_SECONDS
    )
    assert status == 500
    server.stop()  # a worker sends what it holds before it exits

    events = sentry_server.events()
    assert len(events) == 1, "one event for the timeout, none for the worker's exit"
    [exception] = events[0]["exception"]["values"]
    assert exception["type"] == "RequestTimeout"
    assert "GET /stuck ran" in exception["value"]
    assert "stuck" in [frame["function"] for frame in exception["stacktrace"]["frames"]]
    assert events[0]["tags"]["request_id"] == "stuck-3"


def test_a_request_stuck_reading_its_body_is_reported_when_the_timeout_ends_it(
    sentry_server, gunicorn
):
    """The event leaves the body out: reading it again would hang the worker until killed."""
    server = gunicorn(
        workers=1, app=stuck_app.APP, GUNICORN_TIMEOUT="1", SENTRY_DSN=sentry_server.dsn
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as client:
        client.sendall(
            b"POST /stuck-reading HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\nX-Request-ID: stuck-body\r\n\r\n{"half'
        )
        [event] = wait_until(
            lambda: sentry_server.payloads("event"), "the timeout's event", timeout=90
        )
    event = json.loads(event)
    assert event["exception"]["values"][-1]["type"] == "RequestTimeout"
    assert event["tags"]["request_id"] == "stuck-body"
    assert "data" not in event["request"]


def test_without_a_dsn_a_warning_says_errors_are_not_reported(capsys):
    log_records = capture_log_records(capsys)
    create_app(make_settings())
    messages = [record["message"] for record in log_records()]
    assert "SENTRY_DSN is not set: errors are logged but not reported to Sentry" in messages


def test_the_start_says_where_errors_are_reported(sentry_server, capsys):
    log_records = capture_log_records(capsys)
    create_app(make_settings(sentry_dsn=sentry_server.dsn, app_env="staging"))
    messages = [record["message"] for record in log_records()]
    assert "Sentry error reporting enabled for staging" in messages


@pytest.mark.parametrize("traces_sample_rate", ["0.0", "1.0"])
def test_log_lines_before_an_error_arrive_as_its_breadcrumbs(
    sentry_server, tmp_path, traces_sample_rate
):
    """In a process of its own: with tracing, Sentry adds its loguru sinks once a process,
    and each test's logging set-up removes them. Fields bound to a line may hold user data:
    they stay out. Error lines are no events. The card number comes from the environment: an
    event may quote the lines around the failing one (Python 3.13 keeps the source of `-c`)."""
    script = (
        "import logging\n"
        "import os\n"
        "import sentry_sdk\n"
        "from loguru import logger\n"
        "from {{ cookiecutter.package_name }}.app import create_app\n"
        "app = create_app()\n"
        "logging.getLogger('payments').error('an error line of the standard library')\n"
        "logger.error('an error line of loguru')\n"
        "@app.get('/checkout')\n"
        "def checkout():\n"
        "    logger.debug('too fine to keep')\n"
        "    logger.bind(card=os.environ['CARD']).info('the cart was read')\n"
        "    raise RuntimeError('checkout failed')\n"
        "assert app.test_client().get('/checkout').status_code == 500\n"
        "sentry_sdk.flush(timeout=5)\n"
    )
    run_script(
        script,
        tmp_path,
        APP_ENV="development",
        SENTRY_DSN=sentry_server.dsn,
        SENTRY_TRACES_SAMPLE_RATE=traces_sample_rate,
        CARD=CARD,
    )
    [event] = sentry_server.payloads("event")
    messages = [str(crumb.get("message")) for crumb in json.loads(event)["breadcrumbs"]["values"]]
    assert any("the cart was read" in message for message in messages)
    assert not any("too fine to keep" in message for message in messages)
    assert CARD.encode() not in event  # not a part: random ids and timestamps hold "4111"
    assert b'"card"' not in event


@pytest.mark.parametrize(
    "dsn",
    [
        "not-a-dsn",
        "ftp://public@sentry.example.com/42",
        "https://sentry.example.com/42",  # no public key
        "https://public@sentry.example.com/",  # no project id
        "https://public@sentry.example.com/project",  # the id is a number
    ],
)
def test_a_malformed_dsn_is_a_settings_error(monkeypatch, dsn):
    monkeypatch.setenv("SENTRY_DSN", dsn)
    with pytest.raises(SettingsError, match="SENTRY_DSN"):
        load_settings()


@pytest.mark.parametrize(
    "dsn", ["https://public@o1.ingest.sentry.io/42", "http://public@127.0.0.1:9000/relay/7/"]
)
def test_a_well_formed_dsn_is_kept(monkeypatch, dsn):
    monkeypatch.setenv("SENTRY_DSN", dsn)
    assert load_settings().sentry_dsn == dsn


def test_an_empty_dsn_turns_sentry_off(monkeypatch):
    monkeypatch.setenv("SENTRY_DSN", "")
    assert load_settings().sentry_dsn is None


def test_scrubbing_filters_headers_body_query_and_client_address():
    event = {
        "request": {
            "headers": {"Authorization": "x", "X-Api-Key": "x", "Accept": "text/html"},
            "cookies": {"session": "x"},
            "data": {"user": {"password": "x", "name": "ada"}},
            "query_string": "access_token=x&q=flask",
            "env": {"REMOTE_ADDR": "10.1.2.3"},
        },
        "user": {"ip_address": "10.1.2.3", "id": "7"},
    }
    scrubbed = scrub_event(event, {})
    request = scrubbed["request"]
    assert request["headers"] == {
        "Authorization": FILTERED, "X-Api-Key": FILTERED, "Accept": "text/html",
    }  # fmt: skip
    assert request["data"] == {"user": {"password": FILTERED, "name": "ada"}}
    assert request["query_string"] == "access_token=%5BFiltered%5D&q=flask"
    assert "cookies" not in request
    assert "env" not in request
    assert scrubbed["user"] == {"id": "7"}


def test_a_query_string_given_as_bytes_is_scrubbed_and_decoded():
    event = {"request": {"query_string": b"api_key=s3cret&q=caf\xc3\xa9&bad=\xff"}}
    assert scrub_event(event, {})["request"]["query_string"] == (
        "api_key=%5BFiltered%5D&q=caf%C3%A9&bad=%EF%BF%BD"  # an undecodable byte is replaced
    )


def test_a_blank_query_value_survives_scrubbing():
    event = {"request": {"query_string": "token=x&debug=&q=flask"}}
    assert scrub_event(event, {})["request"]["query_string"] == (
        "token=%5BFiltered%5D&debug=&q=flask"
    )


@pytest.mark.parametrize(
    ("context", "sampled"),
    [
        ({"parent_sampled": True, "wsgi_environ": {"PATH_INFO": "/api/items/1"}}, 1.0),
        ({"parent_sampled": False, "wsgi_environ": {"PATH_INFO": "/api/items/1"}}, 0.0),
        ({"parent_sampled": None, "wsgi_environ": {"PATH_INFO": "/api/items/1"}}, 0.25),
        ({"wsgi_environ": {}}, 0.25),  # PEP 3333 lets PATH_INFO be absent
        ({}, 0.25),  # a transaction started outside a request
        ({"parent_sampled": True, "wsgi_environ": {"PATH_INFO": "/livez"}}, 0.0),
    ],
)
def test_traces_follow_the_callers_sampling_decision_over_the_rate(app, context, sampled):
    """A trace sampled upstream must be whole: the caller's decision overrides the rate."""
    assert _traces_sampler(app, 0.25)(context) == sampled


@pytest.mark.parametrize("traces_sample_rate", [0.0, 1.0], ids=["errors-only", "tracing"])
def test_an_event_is_tagged_with_the_trace_id_of_its_request(sentry_server, traces_sample_rate):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    app = create_app(
        make_settings(sentry_dsn=sentry_server.dsn, sentry_traces_sample_rate=traces_sample_rate)
    )
    traceparent = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    assert app.test_client().get("/api/fail", headers=traceparent).status_code == 500
    sentry_sdk.flush(timeout=5)
    [event] = sentry_server.events()
    assert event["tags"]["trace_id"] == trace_id


def test_wsgi_style_header_names_are_scrubbed():
    event = {"request": {"headers": {
        "HTTP_X_API_KEY": "x", "HTTP_AUTHORIZATION": "x", "HTTP_ACCEPT": "text/html",
    }}}  # fmt: skip
    assert scrub_event(event, {})["request"]["headers"] == {
        "HTTP_X_API_KEY": FILTERED, "HTTP_AUTHORIZATION": FILTERED, "HTTP_ACCEPT": "text/html",
    }  # fmt: skip


def test_an_event_without_environ_or_client_address_passes_scrubbing():
    event = {"request": {"url": "http://svc/api/fail"}, "user": {"id": "7"}}
    assert scrub_event(copy.deepcopy(event), {}) == event  # nothing there to remove
