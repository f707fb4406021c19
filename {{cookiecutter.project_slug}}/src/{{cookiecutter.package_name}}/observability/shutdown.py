"""Leaving the load balancer's rotation before stopping.

On SIGTERM (a container or a pod being stopped) gunicorn closes its listening socket
at once: a balancer that has not yet noticed keeps sending requests to a closed port, and
connections still waiting in the listen backlog are reset. With SHUTDOWN_DRAIN_SECONDS set,
the first SIGTERM only makes /readyz answer 503, in every worker; the service goes on
serving for that long, so that balancers and Kubernetes take it out of rotation, and then
stops as gunicorn does: every request a worker has started finishes, within
graceful_timeout. A second SIGTERM stops at once, as do SIGINT and SIGQUIT.
"""

import mmap
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask
from loguru import logger

from .health import register_readiness_check

if TYPE_CHECKING:  # gunicorn's types, for type checkers only
    from gunicorn.arbiter import Arbiter


class ShutdownFlag:
    """Set in the gunicorn master, read by its workers: anonymous shared memory, made before
    they are forked, is the same byte in all of them."""

    def __init__(self) -> None:
        self._byte = mmap.mmap(-1, 1)

    def is_set(self) -> bool:
        return self._byte[0] == 1

    def set(self) -> None:
        self._byte[0] = 1


SHUTTING_DOWN = ShutdownFlag()  # one per process: the master's, inherited by the workers


def init_shutdown_drain(app: Flask, drain_seconds: float) -> None:
    if drain_seconds > 0:
        register_readiness_check(app, "shutdown", _not_shutting_down)


def _not_shutting_down() -> None:
    if SHUTTING_DOWN.is_set():
        raise RuntimeError("shutting down: SIGTERM received")


def drain_before_stopping(server: "Arbiter", drain_seconds: Callable[[], float]) -> None:
    """In the gunicorn master: the first SIGTERM drains for `drain_seconds()`, read then (a
    reload may have changed it), and the stop follows."""
    stop = server.handle_term

    def drain_then_stop() -> None:
        seconds = drain_seconds()
        if seconds > 0 and not SHUTTING_DOWN.is_set():
            _drain(seconds)
        else:
            stop()  # gunicorn's graceful stop

    server.handle_term = drain_then_stop  # type: ignore[method-assign]


def _drain(seconds: float) -> None:
    SHUTTING_DOWN.set()
    logger.info("SIGTERM: /readyz answers 503; serving {} s more, then stopping", seconds)
    # The stop comes as a second SIGTERM, through gunicorn's own signal handling.
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
