"""A stand-in for sentry.io: receives Sentry envelopes and appends their items to a file.

Run as a separate process by the tests: `python envelope_server.py PORT OUTPUT [--hang]`.
With --hang it accepts connections and never answers, like an endpoint that stalls.
"""

import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


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


def serve(port: int, output: Path, hang: bool) -> None:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if hang:
                time.sleep(3600)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            with lock, output.open("a", encoding="utf-8") as out:
                for header, payload in envelope_items(body):
                    record = {"type": header.get("type"), "path": self.path,
                              "payload": payload.decode("utf-8", "replace")}  # fmt: skip
                    out.write(json.dumps(record) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), "--hang" in sys.argv[3:])
