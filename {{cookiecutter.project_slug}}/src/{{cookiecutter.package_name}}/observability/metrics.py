"""Prometheus metrics for every request, correct with any number of gunicorn workers.

Under gunicorn, metrics_directory.py points PROMETHEUS_MULTIPROC_DIR at an empty directory
before anything imports prometheus_client; each worker then writes its samples to files
there and `/metrics` adds up all workers, the dead ones included: the master folds the files
of a worker that exits into an archive (metrics_store.py). With METRICS_PORT set, the
master serves them on that port instead (metrics_server.py): the workers answer /metrics with
404, and `/readyz` with its status alone. Without gunicorn (development server, tests) the app
keeps its own registry in memory, and serves /metrics whatever METRICS_PORT says.

The request metrics have prometheus-flask-exporter's names and labels (`flask_http_request_*`,
which the alerts read), but RequestMetrics records them: the exporter's own hooks cost 50 µs a
request, these 30 with the requests in flight. Besides those, the service exports:
- `flask_http_requests_in_flight`: requests being served right now, over all workers;
- `flask_http_request_exceptions_by_type_total`: unhandled exceptions by class and route;
- `flask_http_request_timeouts_total`: requests ended by the worker timeout, by route;
- `process_worker_cpu_seconds` and `process_worker_resident_memory_bytes`, one series
  per live worker (label `pid`): multiprocess mode has no `process_*` metrics of its own;
- `log_lines_dropped_total`: log lines the gunicorn master dropped (`sink="console"`, a stuck
  reader; `sink="syslog"`, a receiver away for longer than its buffer lasts) or could not
  write (`sink="file"`, a full disk), by `reason`.

Components with metrics of their own add them to the registry in `app.extensions["metrics"]`.
"""

import mmap
import os
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flask import Flask, Response, g, got_request_exception, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import (
    GunicornInternalPrometheusMetrics,
    GunicornPrometheusMetrics,
)

from . import metrics_store
from .health import HEALTH_PATHS, hide_readiness_details, register_polled_path
from .metrics_exposition import scrape
from .metrics_server import INTERNAL_METRICS_PORT
from .metrics_settings import METRICS_PATH
from .timeouts import request_timed_out

# Probes and scrapes would drown the traffic that matters.
UNTRACKED_PATHS = frozenset((*HEALTH_PATHS, METRICS_PATH))
# What the exporter's decorators set on a request to leave it out of the request metrics.
NOT_TRACKED_MARKS = ("prom_do_not_track", "prom_exclude_all")
# Reading /proc costs about 10 µs: often enough for a 15 s scrape, cheap for busy workers.
WORKER_RESOURCES_REFRESH_SECONDS = 1.0
STATM = Path("/proc/self/statm")


def init_metrics(app: Flask) -> PrometheusMetrics:
    options = {"export_defaults": False}  # RequestMetrics records them
    if INTERNAL_METRICS_PORT.port is not None:
        # Recorded here, served by the gunicorn master: this class registers no /metrics.
        metrics = GunicornPrometheusMetrics(app, **options)
        hide_readiness_details(app)
    elif running_multiprocess():
        metrics = ArchiveSafeGunicornMetrics(app, path=METRICS_PATH, **options)
    else:
        # A registry per app: a second create_app() in one process (tests) would
        # otherwise find the default registry taken and silently export nothing.
        metrics = PrometheusMetrics(
            app, path=METRICS_PATH, registry=_single_process_registry(), **options
        )
    metrics.info(
        "flask_exporter_info",
        "Information about the Prometheus Flask exporter",
        version=metrics.version,
    )
    RequestMetrics(app, metrics.registry)
    _count_exceptions_by_type(app, metrics.registry)
    _count_timeouts(app, metrics.registry)
    app.before_request(WorkerResources(metrics.registry).refresh)
    app.extensions["metrics"] = metrics
    register_polled_path(app, METRICS_PATH)
    return metrics


def running_multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


# prometheus_flask_exporter has no types: its classes are Any to mypy, a base it cannot check.
class ArchiveSafeGunicornMetrics(GunicornInternalPrometheusMetrics):  # type: ignore[misc]
    """Scrapes through metrics_store's collector, which never sees a fold half done, and
    writes them with metrics_exposition's cached formats.

    The exporter's own generate_metrics reads the files with a plain MultiProcessCollector,
    made afresh for each scrape whatever registry it was given.
    """

    def generate_metrics(
        self, accept_header: str | None = None, names: list[str] | None = None
    ) -> tuple[str, str]:
        # The collector has no describe(): without this a restricted registry (`name[]`)
        # would find no collector for any name, and answer with nothing.
        registry = CollectorRegistry(support_collectors_without_names=True)
        metrics_store.LockedMultiProcessCollector(registry)
        text, content_type = scrape(registry, accept_header, names)
        return text.decode("utf-8"), content_type


def _single_process_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@dataclass(slots=True)
class RequestTiming:
    started: float  # time.perf_counter()
    recorded: bool = False


class RequestMetrics:
    """Every request but probes and scrapes: counted by method and status, timed by method,
    route and status, and in flight while it is served. A request that raises is counted in
    flask_http_request_exceptions_total as well, all with status 500.

    The series of each method, route and status are looked up once, then kept: finding a
    series by its labels costs more than recording in it.
    """

    def __init__(self, app: Flask, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "flask_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ["method", "url_rule", "status"],  # the route, not the URL: a series per route
            registry=registry,
        )
        self.requests = Counter(
            "flask_http_request_total",
            "Total number of HTTP requests",
            ["method", "status"],
            registry=registry,
        )
        self.exceptions = Counter(
            "flask_http_request_exceptions_total",
            "Total number of HTTP requests which resulted in an exception",
            ["method", "status"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "flask_http_requests_in_flight",
            "Requests being served now, over all live workers",
            registry=registry,
            multiprocess_mode="livesum",  # a worker that dies mid-request stops counting
        )
        self._series: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}
        app.before_request(self.start)
        app.after_request(self.record)
        app.teardown_request(self.finish)

    def start(self) -> None:
        if request.path not in UNTRACKED_PATHS:
            g.request_metrics = RequestTiming(time.perf_counter())
            self.in_flight.inc()

    def record(self, response: Response) -> Response:
        timing = g.get("request_metrics")
        if timing is not None and not timing.recorded and self._tracked():
            self._record(timing, response.status_code)
        return response

    def finish(self, error: BaseException | None) -> None:
        # An earlier before_request hook may have answered before start() ran.
        timing = g.pop("request_metrics", None)
        if timing is None:
            return
        self.in_flight.dec()
        if error is not None and self._tracked():
            self.exceptions.labels(request.method, 500).inc()
            if not timing.recorded:  # no answer was made: an after_request hook raised
                self._record(timing, 500)

    def _record(self, timing: RequestTiming, status: int) -> None:
        timing.recorded = True
        method, route = request.method, str(request.url_rule)
        key = (method, route, status)
        if (series := self._series.get(key)) is None:
            series = self._series[key] = (
                self.duration.labels(method, route, status),
                self.requests.labels(method, status),
            )
        duration, requests = series
        duration.observe(time.perf_counter() - timing.started)
        requests.inc()

    @staticmethod
    def _tracked() -> bool:
        """False for a view the exporter's decorators leave out (do_not_track and the like)."""
        marks = request.__dict__
        return not any(mark in marks for mark in NOT_TRACKED_MARKS)


def _count_exceptions_by_type(app: Flask, registry: CollectorRegistry) -> None:
    exceptions = Counter(
        "flask_http_request_exceptions_by_type",
        "Unhandled exceptions, by exception class and route",
        ["exception_type", "url_rule"],
        registry=registry,
    )

    def count(_sender: Flask, exception: BaseException, **_extra: object) -> None:
        exceptions.labels(type(exception).__name__, str(request.url_rule)).inc()

    # weak=False: blinker would otherwise drop this local function once init returns.
    got_request_exception.connect(count, app, weak=False)


def _count_timeouts(app: Flask, registry: CollectorRegistry) -> None:
    timeouts = Counter(
        "flask_http_request_timeouts",
        "Requests ended by the gunicorn worker timeout, by route",
        ["url_rule"],
        registry=registry,
    )

    started = False

    def start_every_route_at_zero() -> None:
        # A series that first appears at 1 is invisible to increase(), and so to the alert.
        nonlocal started
        if not started:
            started = True
            for rule in app.url_map.iter_rules():
                timeouts.labels(str(rule))

    def count(_sender: Flask, route: str) -> None:
        timeouts.labels(route).inc()

    app.before_request(start_every_route_at_zero)
    request_timed_out.connect(count, app, weak=False)


class WorkerResources:
    """This process's CPU time and memory, refreshed when it serves a request.

    Gauges, not counters, so that a dead worker's series goes away (`retire_worker` in
    metrics_store.py). The CPU one only grows and is read with rate(), but has no `_total`:
    that suffix is for counters (`promtool check metrics`). An idle worker keeps the
    values of its last request.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cpu_seconds = Gauge(
            "process_worker_cpu_seconds",
            "User and system CPU time of this worker, in seconds",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.resident_memory = Gauge(
            "process_worker_resident_memory_bytes",
            "Resident memory of this worker, in bytes",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self._next_refresh = 0.0
        self.refresh()

    def refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + WORKER_RESOURCES_REFRESH_SECONDS
        times = os.times()
        self.cpu_seconds.set(times.user + times.system)
        if STATM.exists():  # Linux only: on a developer's Mac the memory gauge stays at 0
            resident_pages = int(STATM.read_text().split()[1])
            self.resident_memory.set(resident_pages * mmap.PAGESIZE)


def count_lost_log_lines(sink: str, reason: str, lines: int) -> None:
    """In the gunicorn master, which writes every log line: its own file in the metrics
    directory, which every worker's /metrics adds up."""
    _lost_log_lines().labels(sink, reason).inc(lines)


@cache
def _lost_log_lines() -> Counter:
    # Made at the first loss, after the master emptied the metrics directory.
    return Counter(
        "log_lines_dropped",
        "Log lines dropped or not written, by sink (console, file, syslog) and reason",
        ["sink", "reason"],
    )
