"""A stand-in for an OpenTelemetry collector: answers OTLP/HTTP trace exports on loopback.

`OtlpServer` serves from a thread of its caller, in a `with` block, and counts the exports
(of traces, metrics and logs) and bytes it receives: the benchmark's receiver, whose CPU time
is then the caller's own.
`OtlpProcess` runs it in a process of its own, which a test can stop and start again on the
same port: `python -m harness.otlp PORT SPANS_FILE` decodes every export with
opentelemetry-proto, as a collector does, and appends each span to SPANS_FILE as a JSON line.
Decoding needs that package, so the process runs under the service's Python; counting needs
the standard library only.
"""

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .loopback import LOOPBACK, LoopbackProcess, free_port

TRACES_PATH = "/v1/traces"
# Metrics and logs are answered and counted too (the benchmark's OpenTelemetry app sends them).
SIGNAL_PATHS = {TRACES_PATH, "/v1/metrics", "/v1/logs"}
HARNESS_PARENT = Path(__file__).resolve().parents[1]  # where `python -m harness...` finds it
SPAN_KIND_SERVER = 2


def decoded_spans(body: bytes) -> list[dict]:
    """One flat dict per span of an ExportTraceServiceRequest, ids in hex."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append({
                    "name": span.name,
                    "kind": span.kind,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "attributes": _attributes(span.attributes),
                    "resource": resource,
                })  # fmt: skip
    return spans


def _attributes(key_values) -> dict:
    values = {}
    for item in key_values:
        kind = item.value.WhichOneof("value")
        values[item.key] = getattr(item.value, kind) if kind else None
    return values


class OtlpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector offers
    server: "OtlpServer"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        known = self.path in SIGNAL_PATHS
        if known:
            self.server.receive(body, self.path)
        self.send_response(200 if known else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


class OtlpServer(ThreadingHTTPServer):
    """Counts exports and their bytes; given `spans_file`, decodes them and records each span
    there before answering, so that an answered export is on file."""

    daemon_threads = True

    def __init__(self, port: int = 0, spans_file: Path | None = None):
        super().__init__((LOOPBACK, port), OtlpHandler)
        self.spans_file = spans_file
        self.exports = 0
        self.bytes = 0
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    def receive(self, body: bytes, path: str) -> None:
        with self._lock:
            self.exports += 1
            self.bytes += len(body)
            if self.spans_file is not None and path == TRACES_PATH:
                with self.spans_file.open("a", encoding="utf-8") as out:
                    out.writelines(json.dumps(span) + "\n" for span in decoded_spans(body))

    def handle_error(self, request, client_address) -> None:
        pass  # a worker that exits resets its keep-alive connection: not worth a traceback

    def __enter__(self) -> "OtlpServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc) -> None:
        self.shutdown()
        self.server_close()


class OtlpProcess(LoopbackProcess):
    """The stand-in in a process of its own, recording spans in `spans_file`; `start()` again
    after `stop()` listens on the same port, as a restarted collector does."""

    def __init__(self, python: Path, workdir: Path, port: int | None = None):
        super().__init__("OTLP receiver", workdir / "otlp-receiver.out")
        self.port = port or free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.url = self.endpoint
        self.python = python
        self.spans_file = workdir / "spans.jsonl"
        self.spans_file.touch()

    def start(self) -> "OtlpProcess":
        command = [str(self.python), "-m", "harness.otlp", str(self.port), str(self.spans_file)]
        return self.launch(command, HARNESS_PARENT, timeout=20)

    def is_ready(self) -> bool:
        """Listening is enough: it answers nothing but posts."""
        with socket.socket() as sock:
            return sock.connect_ex((LOOPBACK, self.port)) == 0

    def spans(self) -> list[dict]:
        return [json.loads(line) for line in self.spans_file.read_text().splitlines()]

    def server_spans(self) -> list[dict]:
        return [span for span in self.spans() if span["kind"] == SPAN_KIND_SERVER]


def main(arguments: list[str]) -> None:
    port, spans_file = arguments
    OtlpServer(int(port), Path(spans_file)).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
