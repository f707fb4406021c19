"""Tracing under gunicorn, exported to a receiver that decodes OTLP as a collector does.

The default project with an endpoint set, three workers: every request is one server span
named by its route, with its status and its caller's parent; the ids in the log lines are
those of the spans; a receiver that goes away costs no request, and what it missed is
counted as dropped, not lost silently; a reload exports what the old workers held.
"""

import json
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness.loopback import wait_for
from harness.otlp import OtlpProcess

from .service import GunicornService

# path -> (route template, status)
ROUTES = {
    "/api/items/7": ("/api/items/<int:item_id>", 200),
    "/api/items/5000": ("/api/items/<int:item_id>", 404),
    "/api/fail": ("/api/fail", 500),
    "/": ("/", 200),
}
CALLER_SPAN_ID = "00f067aa0ba902b7"
RESOURCE_ATTRIBUTES = "deployment.region=test-1,team=checkout%20web"


@pytest.fixture
def receiver(baked, tmp_path):
    collector = OtlpProcess(baked("all-defaults").python, tmp_path).start()
    yield collector
    collector.stop()


def traced_service(baked, tmp_path, receiver: OtlpProcess, workers: int = 3) -> GunicornService:
    service = GunicornService(
        baked("all-defaults"), tmp_path, workers=workers,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_TRACES_SAMPLER_ARG="1.0",
        OTEL_RESOURCE_ATTRIBUTES=RESOURCE_ATTRIBUTES,
    ).start()  # fmt: skip
    service.wait_for_workers(workers)
    return service


def send(url: str, paths: list[str], clients: int = 8) -> list[dict]:
    """Each request with its own request id; every other one comes with a caller's traceparent.
    Returns what was sent and what came back, with the time it took."""

    def one(numbered: tuple[int, str]) -> dict:
        number, path = numbered
        sent = {"path": path, "request_id": uuid.uuid4().hex, "trace_id": None}
        headers = {"X-Request-ID": sent["request_id"]}
        if number % 2:
            sent["trace_id"] = uuid.uuid4().hex
            headers["traceparent"] = f"00-{sent['trace_id']}-{CALLER_SPAN_ID}-01"
        started = time.monotonic()
        sent["status"] = requests.get(url + path, headers=headers, timeout=30).status_code
        sent["seconds"] = time.monotonic() - started
        return sent

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, enumerate(paths)))


def mixed(count: int) -> list[str]:
    return [list(ROUTES)[number % len(ROUTES)] for number in range(count)]


def log_records(service: GunicornService) -> list[dict]:
    lines = (service.log_dir / "service.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_every_request_is_one_span_and_its_log_lines_carry_its_ids(baked, tmp_path, receiver):
    service = traced_service(baked, tmp_path, receiver)
    try:
        sent = send(service.url, mixed(300))
    finally:
        service.stop()  # SIGTERM: each worker exports what it holds, then exits
    assert [request["status"] for request in sent] == [ROUTES[r["path"]][1] for r in sent]

    spans = receiver.server_spans()
    assert len(spans) == len(sent)
    assert len({span["span_id"] for span in spans}) == len(sent)
    records = log_records(service)
    by_request = {}
    for record in records:
        if "http.request.id" in record:
            by_request.setdefault(record["http.request.id"], []).append(record)
    spans_by_ids = {(span["trace_id"], span["span_id"]): span for span in spans}
    for request in sent:
        route, status = ROUTES[request["path"]]
        lines = by_request[request["request_id"]]
        assert "gunicorn.access" in {line["log.logger"] for line in lines}
        [ids] = {(line["trace.id"], line["span.id"]) for line in lines}  # one span, every line
        span = spans_by_ids[ids]
        assert span["name"] == f"GET {route}"
        assert span["attributes"]["http.response.status_code"] == status
        assert span["attributes"]["http.route"] == route
        if request["trace_id"]:
            assert span["trace_id"] == request["trace_id"]
            assert span["parent_span_id"] == CALLER_SPAN_ID
        else:
            assert span["parent_span_id"] == ""
    resource = spans[0]["resource"]
    assert resource["service.name"] == "my-service"
    assert (resource["deployment.region"], resource["team"]) == ("test-1", "checkout web")
    assert resource["deployment.environment.name"] == "production"
    pids = {record["process.pid"] for record in records if record.get("span.id")}
    assert len(pids) == 3, "three workers, each with its own provider and export thread"


def test_a_receiver_down_costs_no_request_and_its_spans_are_counted_as_dropped(
    baked, tmp_path, receiver
):
    service = traced_service(baked, tmp_path, receiver)
    try:
        before = send(service.url, ["/api/items/1"] * 150)
        wait_for(lambda: len(receiver.server_spans()) == 150, what="the spans before the outage")

        receiver.stop()
        during = send(service.url, ["/api/items/2"] * 150)
        wait_for(
            lambda: service.metric("tracing_spans_dropped_total") >= 150,
            timeout=120, what="the spans of the outage to be counted as dropped",
        )  # fmt: skip
        assert service.metric("tracing_spans_dropped_total", reason="export_failed") == 150
        receiver.start()  # the same port, as a restarted collector
        after = send(service.url, ["/api/items/3"] * 150)
    finally:
        service.stop()

    assert {r["status"] for r in before + during + after} == {200}
    print(f"\nreceiver down: p95 {p95(during) * 1000:.1f} ms, up: {p95(before) * 1000:.1f} ms")
    # A request waiting on the exporter would take seconds; this bound only catches that.
    assert p95(during) < max(5 * p95(before), 0.25)
    targets = [span["attributes"]["url.path"] for span in receiver.server_spans()]
    assert sorted(set(targets)) == ["/api/items/1", "/api/items/3"]
    assert len(targets) == 300, "every span before and after the outage arrived, once"
    messages = [record["message"] for record in log_records(service)]
    assert "tracing: dropping spans (export_failed) until the collector takes them" in messages
    # Said once by each worker that dropped spans, when it delivers again.
    again = [int(m.split()[3]) for m in messages if m.startswith("tracing: exporting again")]
    assert again and sum(again) <= 150


def test_a_reload_exports_what_the_old_workers_held(baked, tmp_path, receiver):
    service = traced_service(baked, tmp_path, receiver)
    try:
        send(service.url, ["/api/items/4"] * 60)
        service.reload()
        # No waiting for the export schedule: the old workers exported as they exited.
        assert len(receiver.server_spans()) == 60
        send(service.url, ["/api/items/5"] * 60)
    finally:
        service.stop()
    assert len(receiver.server_spans()) == 120


def p95(sent: list[dict]) -> float:
    return statistics.quantiles([request["seconds"] for request in sent], n=20)[-1]
