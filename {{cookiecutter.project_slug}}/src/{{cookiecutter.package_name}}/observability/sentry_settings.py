"""The settings of error reporting (errors.py), part of the service's Settings.

A mixin rather than settings of their own, so that a bad SENTRY_DSN stops the gunicorn
master at start, with every other bad value, and not each worker as it boots.
"""

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator


class SentrySettings(BaseModel):
    sentry_dsn: str | None = None
    sentry_traces_sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @field_validator("sentry_dsn", mode="before")
    @classmethod
    def _well_formed_dsn(cls, value: object) -> object:
        if value in (None, ""):
            return None
        parts = urlsplit(str(value))
        project_id = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if parts.scheme not in ("http", "https") or not parts.username or not project_id.isdigit():
            raise ValueError("expected https://<public key>@<host>/<project id>")
        return value
