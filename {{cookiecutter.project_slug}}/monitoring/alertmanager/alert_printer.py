"""A webhook that prints each alert Alertmanager posts to it, one line per alert.

It stands in for your paging and ticketing webhooks until their URLs are in alertmanager.yml,
so that a new stack shows its alerts in this process's output. Standard library only: it runs
in a plain Python image. Usage: python alert_printer.py [port], 5001 by default; port 0 takes
a free one, and the first line names it.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PORT = 5001


def alert_lines(receiver: str, notification: dict) -> list[str]:
    """One line per alert: what, how bad, where, and the summary a person reads first."""
    lines = []
    for alert in notification.get("alerts", []):
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        where = " ".join(f"{key}={value}" for key, value in sorted(labels.items()))
        lines.append(
            f"{receiver}: {alert.get('status', '?').upper()} {labels.get('alertname', '?')}"
            f" [{where}] {annotations.get('summary', '')}".rstrip()
        )
    return lines


class AlertHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            notification = json.loads(body)
        except ValueError:
            self.send_error(400, "expected Alertmanager's JSON")
            return
        for line in alert_lines(self.path.strip("/") or "alert", notification):
            print(line, flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_arguments: object) -> None:
        pass  # the alerts are the output; an access line each would drown them


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT
    server = ThreadingHTTPServer(("0.0.0.0", port), AlertHandler)  # in its container
    print(f"printing the alerts posted to port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
