import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as sdk_encode_spans,
)
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability.tracing_encoding import (
    encode_spans,
)

from .conftest import make_settings
from .otlp_receiver import OtlpReceiver

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONTEXT = SpanContext(trace_id=1, span_id=2, is_remote=False)
EVERY_KIND_OF_VALUE = {
    "text": "GET",
    "number": 200,
    "negative": -1,
    "large": 2**62,
    "ratio": 0.25,
    "flag": True,
    "off": False,
    "words": ("a", "b"),
    "numbers": (1, 2, 3),
    "ratios": (0.5, 1.5),
    "flags": (True, False),
    "nothing": (),
    "with a gap": ("a", None, "c"),
}


def recording_provider(resource: Resource, finished: InMemorySpanExporter) -> TracerProvider:
    # Small limits, so that spans drop attributes, events and links and say how many.
    limits = SpanLimits(max_span_attributes=20, max_events=2, max_links=1)
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(finished))
    return provider


@pytest.fixture
def spans() -> list[ReadableSpan]:
    """Spans of every shape a service makes, from two resources and three scopes, the
    groups interleaved; then one made by hand, with an empty resource, no scope and bytes."""
    finished = InMemorySpanExporter()
    service = recording_provider(
        Resource.create({"service.name": "one"}, schema_url="https://example.com/1"), finished
    )
    other = recording_provider(Resource.create({"service.name": "two"}), finished)
    same_as_service = recording_provider(
        Resource.create({"service.name": "one"}, schema_url="https://example.com/1"), finished
    )
    server = service.get_tracer("server", "1.2")
    client = service.get_tracer(
        "client", schema_url="https://example.com/s", attributes={"scope.flag": True}
    )
    caller = TraceContextTextMapPropagator().extract({
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=value,other=1",
    })  # fmt: skip

    with server.start_as_current_span(
        "GET /items", kind=SpanKind.SERVER, context=caller, attributes=EVERY_KIND_OF_VALUE
    ) as root:
        with client.start_as_current_span("call", kind=SpanKind.CLIENT) as call:
            call.add_event("sent", {"bytes": 12})
            call.record_exception(ValueError("refused"))
            call.add_event("dropped, over the limit")
            call.set_status(StatusCode.ERROR, "the call failed")
        with other.get_tracer("worker").start_as_current_span(
            "work", kind=SpanKind.CONSUMER, links=[Link(root.get_span_context(), {"why": "x"})]
        ):
            pass
        with same_as_service.get_tracer("server", "1.2").start_as_current_span(
            "again", kind=SpanKind.PRODUCER, links=[Link(call.get_span_context())] * 2
        ) as again:
            again.set_attributes({f"key {index}": index for index in range(25)})
        root.set_status(StatusCode.OK)
    with server.start_as_current_span("root"):  # a new trace, no parent
        pass
    by_hand = ReadableSpan(  # the SDK would have made its bytes a string
        "by hand", CONTEXT, resource=Resource.get_empty(), attributes={"raw": b"\x00\xff"}
    )
    return [*finished.get_finished_spans(), by_hand]


def test_the_message_is_the_one_the_sdk_encodes(spans):
    ours = encode_spans(spans)
    assert ours == sdk_encode_spans(spans)
    assert len(ours.resource_spans) == 3  # the two equal resources made one group
    assert sum(
        len(scope.spans) for resources in ours.resource_spans for scope in resources.scope_spans
    ) == len(spans) == 6  # fmt: skip


def test_an_empty_batch_is_an_empty_request():
    assert encode_spans([]) == ExportTraceServiceRequest()


@pytest.mark.parametrize(
    ("span", "error"),
    [
        (ReadableSpan("bad", CONTEXT, attributes={"handle": object()}), "object is no attribute"),
        (ReadableSpan("bad", context=None), "span 'bad' has no context"),
    ],
)
def test_a_span_that_the_sdk_would_not_make_fails_the_batch(span, error):
    with pytest.raises(TypeError, match=error):
        encode_spans([span])


def test_the_service_exports_what_this_encoding_makes(monkeypatch):
    """Fails too if a new exporter stops calling the encoder that the service gives it."""
    collector = OtlpReceiver()
    encoded = []

    def noting(spans):
        encoded.extend(span.name for span in spans)
        return given(spans)

    try:
        app = create_app(make_settings(otel_exporter_otlp_endpoint=collector.endpoint))
        given = trace_exporter.encode_spans
        monkeypatch.setattr(trace_exporter, "encode_spans", noting)
        app.test_client().get("/api/items/7", buffered=True)
        app.extensions["tracing"].stop()  # exports what it holds
    finally:
        collector.stop()
    assert given is encode_spans
    assert encoded == ["GET /api/items/<int:item_id>"]
    assert [span["name"] for span in collector.server_spans()] == encoded
