"""Request tracing with OpenTelemetry, exported over OTLP/HTTP to a collector.

Off until OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then
no tracer provider exists and requests pay nothing. When on:

- every request gets one server span, from OpenTelemetry's WSGI middleware, named by its
  route (`GET /api/items/<int:item_id>`) and continuing the caller's `traceparent` (a
  malformed one starts a new trace); its attributes follow the stable HTTP conventions;
- calls made with urllib3 (requests is built on it) and urllib.request carry the context on;
- the span's trace and span ids replace those of request_context.py, so that log lines and
  error reports carry the ids of the exported span;
- probes and scrapes (health.polled_paths) go around the middleware: never traced.

Each gunicorn worker builds its own provider, export queue and export thread in
create_app, after the fork: a thread does not survive one. A worker that exits (a stop,
a reload, max_requests) exports what it holds first (`TracingHooks.worker_exit`).

A collector that is down, slow or refusing never holds up a request: spans wait in a queue
of at most MAX_QUEUED_SPANS, exported by a thread of their own; what cannot be exported is
dropped, counted (the `spans_dropped` signal, which metrics count) and said once in the log.
"""

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from blinker import Namespace
from flask import Flask, request
from loguru import logger
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.urllib import URLLibInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id
from opentelemetry.util.http import sanitize_method

from ..settings import SERVICE_NAME, Settings
from .health import polled_paths
from .request_context import SpanIds, use_span_ids
from .server_hooks import ServerHooks
from .tracing_encoding import encode_spans
from .tracing_settings import parse_resource_attributes

if TYPE_CHECKING:  # for type checkers only
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

# The SDK's defaults: at about 1 KB a span, a collector outage holds at most 2 MB per worker.
MAX_QUEUED_SPANS = 2048
EXPORT_BATCH_SIZE = 512
# One export, retries included, gives up after this long. Set here, not by
# OTEL_EXPORTER_OTLP_TIMEOUT: the specification counts that in milliseconds, this SDK in
# seconds, and a stalled collector must not hold a stopping worker for hours.
EXPORT_TIMEOUT_SECONDS = 10.0
# A worker stopping stops retrying after this long, and an export under way ends within
# EXPORT_TIMEOUT_SECONDS: well within gunicorn's graceful_timeout (20 s), after which the
# master kills the worker.
STOP_GRACE_SECONDS = 5.0

# OpenTelemetry's stable HTTP conventions (url.path, http.response.status_code: the names of
# the log lines too), unless the environment chooses: the instrumentations still default to
# the old names (http.target, http.status_code), and read this once, when the first starts.
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
STABLE_HTTP_CONVENTIONS = "http"

# Sent with `reason` and `count` whenever spans are dropped (metrics count them). The reasons:
# the queue was full, the collector failed or refused a batch, or a stopping worker gave up.
spans_dropped = Namespace().signal("spans-dropped")
DROP_REASONS = ("queue_full", "export_failed", "not_exported_at_stop")


def init_tracing(app: Flask, settings: Settings) -> None:
    """Call it right after init_request_context, whose middleware takes the span's ids: a
    middleware that a later component puts around the app (security's ProxyFix) then runs
    before the span starts, as it must."""
    url = settings.otel_traces_url
    if url is None:
        logger.info("tracing is off: OTEL_EXPORTER_OTLP_ENDPOINT is not set")
        return
    os.environ.setdefault(SEMCONV_OPT_IN, STABLE_HTTP_CONVENTIONS)
    tracing = Tracing(app, settings, url)
    app.extensions["tracing"] = tracing
    app.wsgi_app = TracedUnlessPolled(app, tracing.provider)  # type: ignore[method-assign]
    app.teardown_request(_finish_request_span)
    use_span_ids(app, current_span_ids)
    _instrument_http_clients(tracing.provider)
    logger.info(
        "tracing to {}, sampler {} {}",
        url,
        settings.otel_traces_sampler,
        settings.otel_traces_sampler_arg,
    )


class Tracing:
    """This process's tracer provider and its export queue."""

    def __init__(self, app: Flask, settings: Settings, url: str) -> None:
        # The exporter's encoder, for one that makes the same message in a quarter of the
        # CPU (tracing_encoding.py): every exporter in the process then uses it.
        trace_exporter.encode_spans = encode_spans  # type: ignore[attr-defined]
        otlp = OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_SECONDS)
        self.exporter = CountedExporter(otlp, app)
        self.processor = BoundedBatchSpanProcessor(self.exporter)
        self.provider = TracerProvider(
            resource=_resource(settings),
            sampler=_sampler(settings),
            # For the development server and scripts; gunicorn's workers stop it before exiting.
            shutdown_on_exit=True,
        )
        self.provider.add_span_processor(self.processor)

    def stop(self) -> None:
        """Export what is queued and stop; a collector that does not answer within
        STOP_GRACE_SECONDS loses what is left, counted."""
        give_up = threading.Timer(STOP_GRACE_SECONDS, self.exporter.give_up)
        give_up.start()
        try:
            self.provider.shutdown()
        finally:
            give_up.cancel()
        self.exporter.count_dropped("not_exported_at_stop", self.processor.waiting)


def current_span_ids() -> SpanIds | None:
    """The trace and span ids of the current span, as W3C Trace Context writes them."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format_trace_id(context.trace_id), format_span_id(context.span_id)


class TracingHooks(ServerHooks):
    """Tracing's part in gunicorn: each worker, as it ends, flushes its queue."""

    def worker_exit(self, server: "Arbiter", worker: "Worker") -> None:
        """Export the spans this worker holds before it exits."""
        app = getattr(worker, "wsgi", None)
        if isinstance(app, Flask) and "tracing" in app.extensions:
            app.extensions["tracing"].stop()


class TracedUnlessPolled:
    """The app behind OpenTelemetry's WSGI middleware, but for probes and scrapes
    (health.polled_paths, read at each request: the components that register their paths
    start after this one).

    The middleware, not OpenTelemetry's Flask instrumentation, which is built on it: that one
    collects the request's attributes twice, builds its full URL and adds two request hooks;
    tracing a request cost a third more with it (the template's README, Benchmark)."""

    def __init__(self, app: Flask, provider: TracerProvider) -> None:
        self.app = app
        self.untraced = app.wsgi_app
        self.traced: WSGIApplication = OpenTelemetryMiddleware(
            app.wsgi_app, tracer_provider=provider
        )

    def __call__(
        self, environ: "WSGIEnvironment", start_response: "StartResponse"
    ) -> Iterable[bytes]:
        path = "/" + environ.get("PATH_INFO", "").lstrip("/")  # as Flask's request.path
        if path in polled_paths(self.app):
            with suppress_instrumentation():  # nor are the calls its readiness checks make
                return self.untraced(environ, start_response)
        return self.traced(environ, start_response)


def _finish_request_span(error: BaseException | None) -> None:
    """Finishes the request's span. It is named by its route: the middleware named it by its
    path, a new name per URL. A URL that matches no route is named by its method alone, and
    a method that OpenTelemetry's HTTP conventions do not list is HTTP, as they say.

    An error that no handler took is recorded on the span. One that is no Exception (the
    SystemExit of gunicorn's worker timeout) passes by the middleware, which then never
    ends the span: it ends here, failed, and the stopping worker exports it."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    rule = request.url_rule
    if rule is None:
        method = sanitize_method(request.method)
        span.update_name("HTTP" if method == "_OTHER" else method)
    else:  # a method its route declares: as few names as the code has routes
        span.update_name(f"{request.method} {rule.rule}")
        span.set_attribute("http.route", rule.rule)
    if error is None:
        return
    span.record_exception(error)
    if not isinstance(error, Exception):
        span.set_status(StatusCode.ERROR, type(error).__name__)
        span.end()


def _resource(settings: Settings) -> Resource:
    """OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES, which wins over
    the service's own name."""
    attributes = {
        "service.name": SERVICE_NAME,
        "deployment.environment.name": settings.app_env,
        **parse_resource_attributes(settings.otel_resource_attributes),
    }
    if settings.otel_service_name:
        attributes["service.name"] = settings.otel_service_name
    return Resource.create(attributes)


def _sampler(settings: Settings) -> Sampler:
    ratio = TraceIdRatioBased(settings.otel_traces_sampler_arg)
    return {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(ratio),
    }[settings.otel_traces_sampler]


def _instrument_http_clients(provider: TracerProvider) -> None:
    """The instrumentations patch the client libraries for the whole process: to the newest
    app's provider (under gunicorn, each worker has exactly one; the tests make many). The
    first provider also becomes the global one, for spans of your own
    (`trace.get_tracer(__name__)`)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    for instrumentor in (URLLib3Instrumentor(), URLLibInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)


class CountedExporter(SpanExporter):
    """The OTLP exporter, counting the spans it fails to deliver; says once in the log that
    spans are being dropped, and once that they are delivered again."""

    def __init__(self, exporter: OTLPSpanExporter, app: Flask) -> None:
        self.exporter = exporter
        self.app = app
        self.handed_over: Callable[[int], None] = lambda count: None
        self.dropped_since_last_export = 0
        self._counting = threading.Lock()  # requests drop spans too, when the queue is full
        self._stopped = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.handed_over(len(spans))
        result = self.exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._exporting_again()
        else:
            self.count_dropped("export_failed", len(spans))
        return result

    def count_dropped(self, reason: str, count: int) -> None:
        if count <= 0:
            return
        with self._counting:
            first = self.dropped_since_last_export == 0
            self.dropped_since_last_export += count
        if first:
            logger.warning("tracing: dropping spans ({}) until the collector takes them", reason)
        spans_dropped.send(self.app, reason=reason, count=count)

    def _exporting_again(self) -> None:
        with self._counting:
            dropped, self.dropped_since_last_export = self.dropped_since_last_export, 0
        if dropped:
            logger.info("tracing: exporting again, {} spans were dropped", dropped)

    def give_up(self) -> None:
        """Ends the exporter's retries; every later export fails at once."""
        if self._stopped.acquire(blocking=False):
            self.exporter.shutdown()

    def shutdown(self) -> None:
        self.give_up()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class BoundedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, its queue kept from overflowing: a span that finds
    MAX_QUEUED_SPANS waiting is dropped here, and counted, instead of silently pushing out
    the oldest one inside the SDK."""

    def __init__(self, exporter: CountedExporter) -> None:
        super().__init__(
            exporter,
            max_queue_size=MAX_QUEUED_SPANS,
            max_export_batch_size=min(EXPORT_BATCH_SIZE, MAX_QUEUED_SPANS),
        )
        self.exporter = exporter
        self.waiting = 0  # sampled spans queued or being batched, not yet handed over
        self._lock = threading.Lock()
        exporter.handed_over = self._handed_over

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        with self._lock:
            admitted = self.waiting < MAX_QUEUED_SPANS
            if admitted:
                self.waiting += 1
        if admitted:
            super().on_end(span)
        else:
            self.exporter.count_dropped("queue_full", 1)

    def _handed_over(self, count: int) -> None:
        with self._lock:
            self.waiting -= count
