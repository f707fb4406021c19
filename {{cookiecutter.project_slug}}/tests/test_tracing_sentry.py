"""Tracing and Sentry: an error reported to Sentry names the trace of its request."""

import pytest
import sentry_sdk

from .otlp_receiver import OtlpReceiver
from .test_errors import EnvelopeServer
from .test_tracing import exported, traced_app


@pytest.fixture
def collector():
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


def test_a_sentry_event_carries_the_trace_id_of_the_span(collector):
    sentry = EnvelopeServer()
    try:
        app = traced_app(collector, sentry_dsn=sentry.dsn)
        app.test_client().get("/api/fail")
        sentry_sdk.flush(timeout=5)
        [event] = sentry.events()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()
        sentry.stop()
    [span] = exported(app, collector)
    assert event["tags"]["trace_id"] == span["trace_id"]
