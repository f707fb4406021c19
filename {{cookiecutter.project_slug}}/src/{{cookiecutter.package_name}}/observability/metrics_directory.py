"""The metrics component in the gunicorn master: the directory the workers' samples share.

prometheus_client picks its storage when it is first imported, so PROMETHEUS_MULTIPROC_DIR
must be set before then. gunicorn.conf.py prepares the directory before anything imports
prometheus_client, and this module imports it only inside the hooks that need it.
"""

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .server_hooks import ServerHooks, at_master_exit

if TYPE_CHECKING:  # gunicorn's types, for type checkers only
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class MetricsDirectory(ServerHooks):
    """The workers' shared directory, emptied when this is made: once per master, through
    prepare_metrics_directory."""

    def __init__(self) -> None:
        # A directory given by the operator is theirs, and stays; one made here goes when
        # the master ends.
        if not os.environ.get(DIRECTORY_VARIABLE):
            made = tempfile.mkdtemp(prefix="metrics-")
            os.environ[DIRECTORY_VARIABLE] = made
            at_master_exit(functools.partial(shutil.rmtree, made, ignore_errors=True))
        self.path = Path(os.environ[DIRECTORY_VARIABLE])
        self._empty()

    def _empty(self) -> None:
        """Start every run from zero: files left by an earlier run would carry old counts over.
        Before the logging is set up, whose first lost lines the master counts in here."""
        shutil.rmtree(self.path, ignore_errors=True)  # the folder stays if it is a mount point
        self.path.mkdir(parents=True, exist_ok=True)

    def on_starting(self, server: "Arbiter") -> None:
        """Import now, in the main thread, what the master's other threads would otherwise
        import at their first count (a lost log line, a security alert): a worker forked
        while a thread imports a module inherits its import lock taken, and hangs at boot
        when it imports that module itself."""
        from . import metrics  # noqa: F401  (prometheus_client with it)

    def child_exit(self, server: "Arbiter", worker: "Worker") -> None:
        """Fold a dead worker's counts into the archive, so that its files can go."""
        from . import metrics_store  # imports prometheus_client: see above

        # An int once forked; types-gunicorn has the "[booting]" that a worker starts with.
        metrics_store.retire_worker(int(worker.pid))

    def log_lines_lost(self, sink: str, reason: str, count: int) -> None:
        """Into /metrics, as `log_lines_dropped_total`."""
        from .metrics import count_lost_log_lines  # imports prometheus_client: see above

        count_lost_log_lines(sink, reason, count)


@functools.cache
def prepare_metrics_directory() -> MetricsDirectory:
    """In the master, once: gunicorn re-runs gunicorn.conf.py on HUP, in the same process,
    and the directory stays, with the counts of the workers that the reload replaces."""
    return MetricsDirectory()
