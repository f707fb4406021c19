"""The service's item endpoint in a plain Flask app: the ceiling, and the usual alternative.

`create_bare_app()` has no instrumentation at all. `create_otel_app()` is what a user would
write instead of our template for metrics: OpenTelemetry's Flask instrumentation with its
Prometheus metrics reader, and `/metrics` served on the app port. Without a tracer provider
spans are not recorded: only the metrics side is compared. Its metrics are per worker.

`create_otel_full_app()` is the whole of OpenTelemetry a user would pick instead of the
template: every request traced, its metrics and its one log line (with the trace and span
ids, by the logging instrumentation), traces and metrics exported over OTLP/HTTP to
OTEL_EXPORTER_OTLP_ENDPOINT.
"""

import logging

from flask import Flask, Response, abort, jsonify
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

KNOWN_ITEMS = 1000


def create_bare_app() -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/api/items/<int:item_id>", view_func=get_item)
    return app


def create_otel_app() -> Flask:
    # Runs in each worker (no preload), so every worker has its own meter provider.
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    app = create_bare_app()
    FlaskInstrumentor().instrument_app(app)
    app.add_url_rule("/metrics", view_func=prometheus_metrics)
    return app


def create_otel_full_app() -> Flask:
    # Runs in each worker (no preload): providers and their export threads start after the fork.
    resource = Resource.create({"service.name": "plain"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    # Its log format, with the trace and span ids, on stderr (gunicorn's output).
    LoggingInstrumentor().instrument(set_logging_format=True, log_level=logging.INFO)
    app = Flask(__name__)
    app.add_url_rule("/api/items/<int:item_id>", view_func=get_logged_item)
    FlaskInstrumentor().instrument_app(app)
    return app


def get_item(item_id: int):
    if item_id > KNOWN_ITEMS:
        abort(404)
    return jsonify(id=item_id, name=f"item {item_id}")


def get_logged_item(item_id: int):
    """The service's endpoint writes one line; so does this one, to compare like with like."""
    logging.getLogger("plain").info("item %s served", item_id)
    return get_item(item_id)


def prometheus_metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
