"""The service's item endpoint in a plain Flask app: the ceiling, and the usual alternative.

`create_bare_app()` has no instrumentation at all. `create_otel_app()` is what a user would
write instead of our template: OpenTelemetry's Flask instrumentation with its Prometheus
metrics reader, and `/metrics` served on the app port. Without a tracer provider spans are
not recorded: only the metrics side is compared. Its metrics are per worker.
"""

from flask import Flask, Response, abort, jsonify
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
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


def get_item(item_id: int):
    if item_id > KNOWN_ITEMS:
        abort(404)
    return jsonify(id=item_id, name=f"item {item_id}")


def prometheus_metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
