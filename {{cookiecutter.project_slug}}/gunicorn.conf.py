"""gunicorn settings for {{ cookiecutter.project_name | docstring_text }}.

This file runs in the gunicorn master, before any worker is forked (and again on HUP).
It reads the service settings, so a bad value stops the service here with one line,
and it sets up logging once for all workers.
"""
{%- if cookiecutter.use_prometheus %}

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

# prometheus_client picks its storage when first imported: the directory must be known
# before anything imports it. Kept across HUP reloads, which re-run this file. A directory
# given by the operator is theirs, and stays.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-")
    from {{ cookiecutter.package_name }}.observability.metrics_store import (
        remove_at_exit,
    )

    remove_at_exit(os.environ["PROMETHEUS_MULTIPROC_DIR"])
{%- else %}

from typing import TYPE_CHECKING
{%- endif %}

from {{ cookiecutter.package_name }}.observability.log_adapters import (
    GunicornLogger,
)
from {{ cookiecutter.package_name }}.observability.log_relay import (
    forward_logs_to_master,
    start_log_relay,
)
from {{ cookiecutter.package_name }}.observability.logging import (
    configure_logging,
)
{%- if cookiecutter.use_prometheus %}
from {{ cookiecutter.package_name }}.observability.metrics import (
    count_lost_log_lines,
)
{%- endif %}
from {{ cookiecutter.package_name }}.observability.timeouts import (
    end_timed_out_request,
)
from {{ cookiecutter.package_name }}.settings import settings_for_server

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

# The sinks live in the master; workers send it their lines (see log_relay.py). On HUP the
# relay pauses while the sinks are rebuilt, so that no line is lost or written twice.
log_relay = start_log_relay()
{%- if cookiecutter.use_prometheus %}
# Lines the master drops or cannot write (a stuck stdout, a full disk) go into /metrics.
configure = partial(configure_logging, count_lost_lines=count_lost_log_lines)
{%- else %}
configure = configure_logging
{%- endif %}
settings = settings_for_server(apply=log_relay.paused(configure))

wsgi_app = "{{ cookiecutter.package_name }}.app:create_app()"
bind = f"0.0.0.0:{settings.port}"
workers = settings.web_concurrency
timeout = settings.gunicorn_timeout
graceful_timeout = 20
keepalive = 5
accesslog = "-"
logger_class = GunicornLogger
# gunicorn's control socket defaults to one path per user, shared by every instance on the host.
control_socket_disable = True


def post_fork(server: "Arbiter", worker: "Worker") -> None:
    forward_logs_to_master(settings, log_relay.address)


def worker_abort(worker: "Worker") -> None:
    """The worker timeout struck: report the stuck request as a timeout, not a bare exit."""
    end_timed_out_request(timeout)


def on_exit(server: "Arbiter") -> None:
    log_relay.stop()
{%- if cookiecutter.use_prometheus %}


def on_starting(server: "Arbiter") -> None:
    """Start every run from zero: files left by an earlier run would carry old counts over."""
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)


def child_exit(server: "Arbiter", worker: "Worker") -> None:
    """Fold a dead worker's counts into the archive, so that its files can go."""
    from {{ cookiecutter.package_name }}.observability import metrics_store

    # An int once forked; types-gunicorn has the "[booting]" that a worker starts with.
    metrics_store.retire_worker(int(worker.pid))
{%- endif %}
