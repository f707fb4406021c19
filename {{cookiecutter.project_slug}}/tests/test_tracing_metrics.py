"""Tracing and the metrics: scrapes are not traced, and lost spans are counted in /metrics."""

import pytest

from .otlp_receiver import OtlpReceiver
from .test_tracing import exported, traced_app


@pytest.fixture
def collector():
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


def test_scrapes_are_not_traced(collector):
    app = traced_app(collector)
    client = app.test_client()
    for path in ("/metrics", "/api/items/1"):
        assert client.get(path).status_code == 200
    assert [span["name"] for span in exported(app, collector)] == ["GET /api/items/<int:item_id>"]


def test_dropped_spans_are_counted_in_the_metrics(collector):
    collector.answer = 400  # refused at once: a 5xx would be retried for seconds first
    app = traced_app(collector)
    client = app.test_client()
    for _ in range(4):
        client.get("/api/items/1")
    app.extensions["tracing"].provider.force_flush()
    scrape = client.get("/metrics").text
    assert 'tracing_spans_dropped_total{reason="export_failed"} 4.0' in scrape
    assert 'tracing_spans_dropped_total{reason="queue_full"} 0.0' in scrape
