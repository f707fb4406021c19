"""A stand-in for sentry.io: answers Sentry's envelope posts, counts them, can record their items.

`EnvelopeServer` serves from a thread of its caller, in a `with` block: its CPU time is then
the caller's own (the benchmark's accounting). `EnvelopeProcess` runs it in a process of its
own, which a test can kill: `python -m harness.envelopes PORT ITEMS_FILE [--hang]` appends
every item it receives to ITEMS_FILE as a JSON line; with --hang it accepts connections and
never answers, like an endpoint that stalls.
"""

import gzip
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .loopback import LOOPBACK, LoopbackProcess

ENVELOPE_PATH = re.compile(r"^/api/\d+/envelope/$")
HARNESS_PARENT = Path(__file__).resolve().parents[1]  # where `python -m harness...` finds it


def sentry_dsn(port: int) -> str:
    return f"http://public@{LOOPBACK}:{port}/42"


def envelope_items(body: bytes) -> list[tuple[dict, bytes]]:
    """An envelope is a header line, then per item a header line and a payload."""
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


class EnvelopeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as sentry.io offers
    server: "EnvelopeServer"

    def do_POST(self) -> None:
        if self.server.hang:
            time.sleep(3600)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        known = bool(ENVELOPE_PATH.match(self.path))
        if known:
            self.server.receive(self.path, body, self.headers.get("Content-Encoding"))
        answer = b"{}" if known else b""
        self.send_response(200 if known else 404)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args) -> None:
        pass  # one line per envelope would flood the output


class EnvelopeServer(ThreadingHTTPServer):
    """Counts the envelopes posted to it; given `items_file`, appends their items to it.

    In a `with` block it serves from a thread of this process.
    """

    daemon_threads = True

    def __init__(self, port: int = 0, items_file: Path | None = None, hang: bool = False):
        super().__init__((LOOPBACK, port), EnvelopeHandler)
        self.items_file = items_file
        self.hang = hang
        self.envelopes = 0
        self._lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return sentry_dsn(self.server_address[1])

    def receive(self, path: str, body: bytes, encoding: str | None) -> None:
        with self._lock:
            self.envelopes += 1
            if self.items_file is not None:
                self._record(path, gzip.decompress(body) if encoding == "gzip" else body)

    def _record(self, path: str, envelope: bytes) -> None:
        with self.items_file.open("a", encoding="utf-8") as out:
            for header, payload in envelope_items(envelope):
                record = {"type": header.get("type"), "path": path,
                          "payload": payload.decode("utf-8", "replace")}  # fmt: skip
                out.write(json.dumps(record) + "\n")

    def handle_error(self, request, client_address) -> None:
        pass  # a worker that exits resets its keep-alive connection: not worth a traceback

    def __enter__(self) -> "EnvelopeServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc) -> None:
        self.shutdown()
        self.server_close()


class EnvelopeProcess(LoopbackProcess):
    """The stand-in in a process of its own, recording the items it receives in `items_file`."""

    def __init__(self, workdir: Path, hang: bool = False):
        super().__init__("envelope server", workdir / "envelope-server.out")
        self.items_file = workdir / "envelopes.jsonl"
        self.items_file.touch()
        self.hang = hang
        self.dsn = sentry_dsn(self.port)

    def start(self) -> "EnvelopeProcess":
        command = [sys.executable, "-m", "harness.envelopes", str(self.port),
                   str(self.items_file), *(["--hang"] if self.hang else [])]  # fmt: skip
        return self.launch(command, HARNESS_PARENT, timeout=10)

    def is_ready(self) -> bool:
        """Listening is enough: it answers nothing but posts."""
        with socket.socket() as sock:
            return sock.connect_ex((LOOPBACK, self.port)) == 0

    def items(self, item_type: str) -> list[dict]:
        """The payloads of the items of one type received so far."""
        records = [json.loads(line) for line in self.items_file.read_text().splitlines()]
        return [json.loads(record["payload"]) for record in records
                if record["type"] == item_type]  # fmt: skip


def main(arguments: list[str]) -> None:
    port, items_file, *flags = arguments
    EnvelopeServer(int(port), Path(items_file), hang="--hang" in flags).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
