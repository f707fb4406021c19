"""Serve requests through gunicorn's own sync-worker code, in this one process, with no server.

    python one_worker.py bare|service REQUESTS [RELAY_ADDRESS]

Each request is written into one end of a socket pair and the other end handed to
SyncWorker.handle: gunicorn parses it, calls the app, writes the answer, logs the access line
and runs the pre- and post-request hooks, as a worker does. `service`: the baked project in
the working directory, with its gunicorn.conf.py (its logger, hooks and the worker's set-up)
and its log lines sent to the relay listening at RELAY_ADDRESS, in place of the master's.
`bare`: the plain Flask app with gunicorn's defaults. Prints the CPU the requests took.
"""

import os
import runpy
import socket
import sys
import types

from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.sync import SyncWorker

REQUEST = b"GET /api/items/7 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"
# What gunicorn.conf.py sets that a worker reads.
WORKER_SETTINGS = ("logger_class", "accesslog", "pre_request", "post_request", "timeout")


def bare_worker() -> SyncWorker:
    from plain import create_bare_app

    cfg = Config()
    worker = SyncWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    worker.wsgi = create_bare_app()
    return worker


def service_worker(relay_address: str) -> SyncWorker:
    """The project's worker after post_fork and post_worker_init, its relay's master elsewhere."""
    package = os.environ["BENCH_PACKAGE"]
    log_relay = __import__(f"{package}.observability.log_relay", fromlist=["start_log_relay"])
    log_relay.start_log_relay = lambda: types.SimpleNamespace(
        address=relay_address, paused=lambda configure: configure, stop=lambda: None
    )
    conf = runpy.run_path("gunicorn.conf.py")
    cfg = Config()
    for name in WORKER_SETTINGS:
        cfg.set(name, conf[name])
    server = types.SimpleNamespace(cfg=cfg, pid=os.getpid())
    worker = SyncWorker(0, os.getpid(), [], None, 30, cfg, cfg.logger_class(cfg))
    conf["post_fork"](server, worker)
    worker.wsgi = __import__(f"{package}.app", fromlist=["create_app"]).create_app()
    conf["post_worker_init"](worker)
    return worker


def serve(worker: SyncWorker, requests: int) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    for _ in range(requests):
        client, served = socket.socketpair()
        client.sendall(REQUEST)
        client.shutdown(socket.SHUT_WR)  # gunicorn lingers on a socket until its client closes
        worker.handle(listener, served, ("127.0.0.1", 40000))
        if not client.recv(65536).startswith(b"HTTP/1.1 200"):
            sys.exit("the request failed")
        client.close()
    listener.close()


def main() -> None:
    kind, requests = sys.argv[1], int(sys.argv[2])
    worker = bare_worker() if kind == "bare" else service_worker(sys.argv[3])
    before = os.times()
    serve(worker, requests)
    after = os.times()
    user, system = (after.user - before.user) / requests, (after.system - before.system) / requests
    print(f"{user * 1e6:.1f} {system * 1e6:.1f}")


if __name__ == "__main__":
    main()
