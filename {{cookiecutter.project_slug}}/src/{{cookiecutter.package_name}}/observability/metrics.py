"""Prometheus metrics for every request, correct with any number of gunicorn workers.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at an empty directory
before anything imports prometheus_client; each worker then writes its samples to files
there and `/metrics` adds up all workers, the dead ones included. Without gunicorn
(development server, tests) the app keeps its own registry in memory.
"""

import os

from flask import Flask
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from .health import HEALTH_PATHS

METRICS_PATH = "/metrics"
# Probes and scrapes would drown the traffic that matters.
EXCLUDED_PATHS = [f"^{path}$" for path in (*HEALTH_PATHS, METRICS_PATH)]


def init_metrics(app: Flask) -> PrometheusMetrics:
    options = {
        "group_by": "url_rule",  # one series per route, not per distinct URL
        "excluded_paths": EXCLUDED_PATHS,
    }
    if running_multiprocess():
        metrics = GunicornInternalPrometheusMetrics(app, path=METRICS_PATH, **options)
    else:
        # A registry per app: a second create_app() in one process (tests) would
        # otherwise find the default registry taken and silently export nothing.
        metrics = PrometheusMetrics(
            app, path=METRICS_PATH, registry=_single_process_registry(), **options
        )
    app.extensions["metrics"] = metrics
    return metrics


def running_multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _single_process_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
