"""gunicorn settings for {{ cookiecutter.project_name | docstring_text }}.

This file runs in the gunicorn master, before any worker is forked (and again on HUP).
It reads the service settings, so a bad value stops the service here with one line,
and it sets up logging once for all workers.
"""

import gc
from functools import partial
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.observability.log_relay import (
    RelayingGunicornLogger,
    forward_logs_to_master,
    request_ended,
    request_started,
    start_log_relay,
)
from {{ cookiecutter.package_name }}.observability.logging import (
    configure_logging,
)
{%- if cookiecutter.use_prometheus %}
from {{ cookiecutter.package_name }}.observability.metrics_directory import (
    prepare_metrics_directory,
)
from {{ cookiecutter.package_name }}.observability.metrics_server import (
    InternalMetricsServer,
)
{%- endif %}
{%- if cookiecutter.use_security_monitoring %}
from {{ cookiecutter.package_name }}.observability.security import (
    SecurityThresholds,
)
{%- endif %}
{%- if cookiecutter.use_security_monitoring and cookiecutter.use_prometheus %}
from {{ cookiecutter.package_name }}.observability.security_metrics import (
    count_security_alert,
)
{%- endif %}
from {{ cookiecutter.package_name }}.observability.server_hooks import (
    EachComponent,
)
from {{ cookiecutter.package_name }}.observability.shutdown import (
    drain_before_stopping,
)
from {{ cookiecutter.package_name }}.observability.timeouts import (
    end_timed_out_request,
)
{%- if cookiecutter.use_opentelemetry %}
from {{ cookiecutter.package_name }}.observability.tracing import (
    TracingHooks,
)
{%- endif %}
from {{ cookiecutter.package_name }}.settings import (
    SERVER_SETTINGS,
    current_settings,
)

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.http import Request
    from gunicorn.http.wsgi import Response
    from gunicorn.workers.base import Worker

# The optional components' hooks in the master (see server_hooks.py).
components = EachComponent(
{%- if cookiecutter.use_prometheus %}
    prepare_metrics_directory(),  # before anything imports prometheus_client
    InternalMetricsServer(),  # /metrics on METRICS_PORT, when it is set
{%- endif %}
{%- if cookiecutter.use_opentelemetry %}
    TracingHooks(),  # each worker exports its spans before it exits
{%- endif %}
{%- if cookiecutter.use_security_monitoring %}
    SecurityThresholds({% if cookiecutter.use_prometheus %}count_alert=count_security_alert{% endif %}),
{%- endif %}
{%- if cookiecutter.use_prometheus or cookiecutter.use_opentelemetry or cookiecutter.use_security_monitoring %}
{% endif -%}
)
# The sinks live in the master; workers send it their lines (see log_relay.py). On HUP the
# relay pauses while the sinks are rebuilt, so that no line is lost or written twice. Lines
# the master drops or cannot write (a stuck stdout, a full disk) go to the components.
log_relay = start_log_relay()
configure = partial(configure_logging, count_lost_lines=components.log_lines_lost)
settings = SERVER_SETTINGS.load(apply=log_relay.paused(configure))

wsgi_app = "{{ cookiecutter.package_name }}.app:create_app()"
bind = f"0.0.0.0:{settings.port}"
workers = settings.web_concurrency
timeout = settings.gunicorn_timeout
graceful_timeout = 20
keepalive = 5
accesslog = "-"
logger_class = RelayingGunicornLogger
# gunicorn's control socket defaults to one path per user, shared by every instance on the host.
control_socket_disable = True


def on_starting(server: "Arbiter") -> None:
    components.on_starting(server)
    drain_before_stopping(server, lambda: current_settings().shutdown_drain_seconds)


def post_fork(server: "Arbiter", worker: "Worker") -> None:
    forward_logs_to_master(settings, log_relay.address)


def post_worker_init(worker: "Worker") -> None:
    """The worker has loaded the app. What it holds now (modules, the app) lives as long as
    it does: frozen, it is left out of the garbage collector's full collections, each of
    which would otherwise go through all of it, and hold up a request, for tens of ms."""
    gc.collect()  # what is garbage already is freed, not frozen
    gc.freeze()
    components.post_worker_init(worker)


def pre_request(worker: "Worker", req: "Request") -> None:
    """A request's lines go to the master together, when it ends (see log_relay.py)."""
    request_started()


def post_request(
    worker: "Worker", req: "Request", environ: dict[str, object], resp: "Response"
) -> None:
    request_ended()


def worker_abort(worker: "Worker") -> None:
    """The worker timeout struck: report the stuck request as a timeout, not a bare exit."""
    end_timed_out_request(timeout)


def worker_exit(server: "Arbiter", worker: "Worker") -> None:
    components.worker_exit(server, worker)


def child_exit(server: "Arbiter", worker: "Worker") -> None:
    components.child_exit(server, worker)


def on_exit(server: "Arbiter") -> None:
    log_relay.stop()
