"""The metrics component in the gunicorn master: /metrics on an internal port, METRICS_PORT.

The service's port answers anyone who can reach the service; the metrics tell its routes,
its version and its errors. With METRICS_PORT set, the master serves /metrics on that port
alone, on the interface the service listens on (all of them in gunicorn.conf.py), from a
thread of its own; the workers answer /metrics with 404 and `/readyz` with its status alone
(metrics.py). Publish the service's port, and let only Prometheus reach METRICS_PORT.

The master reads the same files as a worker's /metrics would, through the same collector
(metrics_store.py): the same series, the dead workers' counts included. It answers while
every worker is busy, and it is started once per master: a HUP binds nothing again, and a
changed METRICS_PORT takes a restart. prometheus_client is imported inside the functions:
gunicorn.conf.py imports this module before PROMETHEUS_MULTIPROC_DIR is set
(see metrics_directory.py).
"""

import gzip
import os
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from gunicorn.util import parse_address

from ..settings import SERVICE_NAME, current_settings
from .metrics_settings import METRICS_PATH
from .server_hooks import ServerHooks

if TYPE_CHECKING:  # gunicorn's types, for type checkers only
    from gunicorn.arbiter import Arbiter

WsgiApp = Callable[[dict[str, Any], Callable[..., object]], Iterable[bytes]]


class InternalMetricsPort:
    """The port the master serves the metrics on: set in the master at start, inherited by
    the workers it forks, which then leave /metrics to it."""

    def __init__(self) -> None:
        self.port: int | None = None


INTERNAL_METRICS_PORT = InternalMetricsPort()


class InternalMetricsServer(ServerHooks):
    """Binds METRICS_PORT before the first worker starts: on_starting is not run on HUP."""

    def on_starting(self, server: "Arbiter") -> None:
        port = current_settings().metrics_port
        if port is None:
            return
        try:
            metrics_server = _MetricsServer((_service_host(server), port), _metrics_only())
        except OSError as error:
            raise SystemExit(f"{SERVICE_NAME}: METRICS_PORT={port}: {error.strerror}") from None
        # The workers need no copy of the listening socket: the port is free once the master ends.
        os.register_at_fork(after_in_child=metrics_server.socket.close)
        serving = threading.Thread(
            target=metrics_server.serve_forever, name="metrics-server", daemon=True
        )
        serving.start()
        INTERNAL_METRICS_PORT.port = port


def _service_host(server: "Arbiter") -> str:
    """The host of gunicorn's first address; all interfaces for a Unix socket."""
    address = parse_address(server.cfg.bind[0])
    return address[0] if isinstance(address, tuple) else "0.0.0.0"


class _QuietHandler(WSGIRequestHandler):
    timeout = 30  # seconds: a client that stops sending does not keep its thread for good

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each, and stderr is the master's console."""


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold up the master's exit

    def __init__(self, address: tuple[str, int], app: WsgiApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _QuietHandler)
        self.set_app(app)


def _metrics_only() -> WsgiApp:
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import gzip_accepted

    from .metrics_exposition import scrape
    from .metrics_store import LockedMultiProcessCollector

    # As in metrics.ArchiveSafeGunicornMetrics: the collector has no describe(), and a
    # restricted scrape (`name[]`) would otherwise find nothing.
    registry = CollectorRegistry(support_collectors_without_names=True)
    LockedMultiProcessCollector(registry)

    def serve(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"Not found: the metrics are at {METRICS_PATH}\n".encode()]
        # What prometheus_client's WSGI app does, with the cached formats.
        names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
        body, content_type = scrape(registry, environ.get("HTTP_ACCEPT"), names)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return serve
