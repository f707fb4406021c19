"""`tracing_spans_dropped_total`: the spans of tracing.py that never reached the collector,
counted by reason (tracing.DROP_REASONS): each worker counts its own, and /metrics adds them
up like every other worker metric."""

from flask import Flask
from prometheus_client import Counter

from .tracing import DROP_REASONS, spans_dropped


def init_tracing_metrics(app: Flask) -> None:
    dropped = Counter(
        "tracing_spans_dropped",
        "Spans that never reached the collector, by reason",
        ["reason"],
        registry=app.extensions["metrics"].registry,
    )
    for reason in DROP_REASONS:
        dropped.labels(reason)  # from 0: a series that first appears at 1 hides that increase

    def count(_sender: Flask, reason: str, count: int) -> None:
        dropped.labels(reason).inc(count)

    # weak=False: blinker would otherwise drop this local function once init returns.
    spans_dropped.connect(count, app, weak=False)
