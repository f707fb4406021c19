"""The metrics component in the gunicorn master: the directory the workers' samples share.

prometheus_client picks its storage when it is first imported, so PROMETHEUS_MULTIPROC_DIR
must be set before then. gunicorn.conf.py makes its `MetricsDirectory` before anything
imports prometheus_client, and this module imports it only inside the hooks that need it.
"""

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from .server_hooks import ServerHooks, at_master_exit

if TYPE_CHECKING:  # gunicorn's types, for type checkers only
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class MetricsDirectory(ServerHooks):
    # The process that emptied the directory: gunicorn re-runs gunicorn.conf.py on HUP, in
    # the same process, and the workers' counts must survive that.
    emptied_by: ClassVar[int | None] = None

    def __init__(self) -> None:
        # Kept across HUP reloads. A directory given by the operator is theirs, and stays;
        # one made here goes when the master ends.
        if not os.environ.get(DIRECTORY_VARIABLE):
            made = tempfile.mkdtemp(prefix="metrics-")
            os.environ[DIRECTORY_VARIABLE] = made
            at_master_exit(partial(shutil.rmtree, made, ignore_errors=True))
        self.path = Path(os.environ[DIRECTORY_VARIABLE])
        if MetricsDirectory.emptied_by != os.getpid():
            self._empty()
            MetricsDirectory.emptied_by = os.getpid()

    def _empty(self) -> None:
        """Start every run from zero: files left by an earlier run would carry old counts over.
        Before the logging is set up, whose first lost lines the master counts in here."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)

    def child_exit(self, server: "Arbiter", worker: "Worker") -> None:
        """Fold a dead worker's counts into the archive, so that its files can go."""
        from . import metrics_store  # imports prometheus_client: see above

        # An int once forked; types-gunicorn has the "[booting]" that a worker starts with.
        metrics_store.retire_worker(int(worker.pid))

    def log_lines_lost(self, sink: str, reason: str, count: int) -> None:
        """Into /metrics, as `log_lines_dropped_total`."""
        from .metrics import count_lost_log_lines  # imports prometheus_client: see above

        count_lost_log_lines(sink, reason, count)
