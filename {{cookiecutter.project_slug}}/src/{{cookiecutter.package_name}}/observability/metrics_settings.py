"""The settings of the metrics component (metrics.py, metrics_server.py), part of the
service's Settings.

A mixin rather than settings of their own, so that a bad value stops the gunicorn master
at start, with every other bad value.
"""

from typing import Annotated, Self

from pydantic import BaseModel, Field, field_validator, model_validator

# Where both the workers and the master's internal port answer; fixed, not a setting:
# prometheus.yml, the ServiceMonitor and the probes' exemptions all name it.
METRICS_PATH = "/metrics"


class MetricsSettings(BaseModel):
    # Unset: /metrics on the service's port. Set: the gunicorn master serves the metrics on
    # this port, and the service's port answers /metrics with 404 (metrics_server.py).
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_means_same_port(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _apart_from_the_service_port(self) -> Self:
        service_port = getattr(self, "port", None)  # a field of Settings, which mixes this in
        if self.metrics_port is not None and self.metrics_port == service_port:
            raise ValueError(
                f"METRICS_PORT={self.metrics_port} is PORT too: give the metrics a port of "
                "their own, or leave METRICS_PORT unset to serve them on PORT"
            )
        return self
