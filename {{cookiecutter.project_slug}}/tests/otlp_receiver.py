"""A stand-in for an OpenTelemetry collector: OTLP over HTTP on a free loopback port.

It decodes each export with opentelemetry-proto, as a collector would, and keeps every span
with its resource. `answer` is the status it replies with (a collector refusing is 400);
`hold()` makes it keep every export waiting, like a stalled collector, until `release()`;
`export_requests` counts the exports that reached it, answered or not.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

TRACES_PATH = "/v1/traces"


def decoded_spans(body: bytes) -> list[dict]:
    """One flat dict per span: its ids in hex, as W3C Trace Context and the log lines write them."""
    export = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in export.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append({
                    "name": span.name,
                    "kind": span.kind,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "status": span.status.code,
                    "attributes": _attributes(span.attributes),
                    "events": [
                        {"name": event.name, **_attributes(event.attributes)}
                        for event in span.events
                    ],
                    "resource": resource,
                })  # fmt: skip
    return spans


def _attributes(key_values) -> dict[str, object]:
    return {item.key: _value(item.value) for item in key_values}


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    def __init__(self, answer: int = 200):
        self.spans: list[dict] = []
        self.answer = answer
        self.export_requests = 0  # received, answered or not
        self.released = threading.Event()
        self.released.set()
        receiver = self
        counting = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with counting:
                    receiver.export_requests += 1
                receiver.released.wait()
                if self.path == TRACES_PATH and receiver.answer == 200:
                    receiver.spans.extend(decoded_spans(body))
                self.send_response(receiver.answer if self.path == TRACES_PATH else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold(self):
        self.released.clear()

    def release(self):
        self.released.set()

    def server_spans(self) -> list[dict]:
        return [span for span in self.spans if span["kind"] == 2]  # SPAN_KIND_SERVER

    def wait_for_spans(self, count: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.server_spans()) < count:
            assert time.monotonic() < deadline, f"{len(self.server_spans())} of {count} spans"
            time.sleep(0.05)
        return self.server_spans()

    def stop(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()
