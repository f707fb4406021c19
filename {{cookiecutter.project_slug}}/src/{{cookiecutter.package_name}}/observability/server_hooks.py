"""The optional components' part in the gunicorn master, and in each worker as it ends.

gunicorn calls the hooks of gunicorn.conf.py in the master, but `post_worker_init` and
`worker_exit` in the worker concerned. The core's are written there;
an optional component brings a `ServerHooks` of its own, which gunicorn.conf.py lists
once: switching the component off removes that one entry and nothing else. Any component
cleans up after the master with `at_master_exit`.
"""

import atexit
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # gunicorn's types, for type checkers only
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker


class ServerHooks:
    """One component's hooks; each does nothing unless the component overrides it."""

    def on_starting(self, server: "Arbiter") -> None:
        """Before the first worker starts; not again on HUP."""

    def child_exit(self, server: "Arbiter", worker: "Worker") -> None:
        """A worker has exited, however it ended."""

    def post_worker_init(self, worker: "Worker") -> None:
        """In the worker: it has loaded the app and is about to serve."""

    def worker_exit(self, server: "Arbiter", worker: "Worker") -> None:
        """In the worker: it is about to exit, stopped, reloaded or replaced (not killed)."""

    def log_lines_lost(self, sink: str, reason: str, count: int) -> None:
        """The master dropped `count` lines meant for `sink`, or could not write them."""


class EachComponent(ServerHooks):
    """The hooks of every component given, called in the order given."""

    def __init__(self, *components: ServerHooks) -> None:
        self.components = components

    def on_starting(self, server: "Arbiter") -> None:
        for component in self.components:
            component.on_starting(server)

    def child_exit(self, server: "Arbiter", worker: "Worker") -> None:
        for component in self.components:
            component.child_exit(server, worker)

    def post_worker_init(self, worker: "Worker") -> None:
        for component in self.components:
            component.post_worker_init(worker)

    def worker_exit(self, server: "Arbiter", worker: "Worker") -> None:
        for component in self.components:
            component.worker_exit(server, worker)

    def log_lines_lost(self, sink: str, reason: str, count: int) -> None:
        for component in self.components:
            component.log_lines_lost(sink, reason, count)


def at_master_exit(action: Callable[[], object]) -> None:
    """Run `action` when this process exits, however it ends (a clean stop, a bad setting
    at start), and not in the workers forked from it, which inherit the exit handlers."""
    master = os.getpid()

    def in_master_only() -> None:
        if os.getpid() == master:
            action()

    atexit.register(in_master_only)
