"""The settings of request tracing (tracing.py), part of the service's Settings.

OpenTelemetry's own environment variables, read with every other setting: a bad value stops
the gunicorn master at start with one line naming it, instead of each worker logging an SDK
warning and tracing nothing. They are handed to the SDK explicitly, so that `.env` works
for them too.
"""

from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator

# The samplers of the OpenTelemetry specification that take no plug-in.
TracesSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]


class TracingSettings(BaseModel):
    otel_sdk_disabled: bool = False
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    # The exporter speaks OTLP over HTTP with protobuf; gRPC would need another exporter.
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = "http/protobuf"
    otel_traces_sampler: TracesSampler = "parentbased_traceidratio"
    otel_traces_sampler_arg: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    otel_service_name: str | None = None
    otel_resource_attributes: str = ""

    @field_validator(
        "otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint", mode="before"
    )
    @classmethod
    def _http_url(cls, value: object) -> object:
        if value in (None, ""):
            return None
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL, such as http://collector:4318")
        return value

    @field_validator("otel_service_name", mode="before")
    @classmethod
    def _empty_means_default_name(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("otel_resource_attributes")
    @classmethod
    def _key_value_pairs(cls, value: str) -> str:
        parse_resource_attributes(value)
        return value

    @property
    def otel_traces_url(self) -> str | None:
        """Where spans go; None leaves tracing off. The signal's own endpoint is used as it
        is; the general one gets the traces path, as the specification says."""
        if self.otel_sdk_disabled:
            return None
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None


def parse_resource_attributes(value: str) -> dict[str, str]:
    """`key=value,key2=value2`, values percent-encoded (the W3C Baggage format)."""
    attributes = {}
    for member in filter(None, (part.strip() for part in value.split(","))):
        key, equals, encoded = member.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"expected key=value pairs separated by commas, got {member!r}")
        attributes[key.strip()] = unquote(encoded.strip())
    return attributes
