"""The settings of security monitoring (security.py), part of the service's Settings.

A mixin rather than settings of their own, so that a bad value stops the gunicorn master
at start, with every other bad value, and not each worker as it boots.
"""

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator

Positive = Annotated[int, Field(ge=1)]


class SecuritySettings(BaseModel):
    # How many reverse proxies in front of the service append to X-Forwarded-For: 0 trusts
    # none (the client is the socket's peer), N takes the Nth address from the right.
    trusted_proxy_hops: Annotated[int, Field(ge=0, le=10)] = 0
    # The credential of the example endpoint /api/private; unset, every request gets a 401.
    api_token: SecretStr | None = None

    # Per client: this many 404 answers within the window is a scan (malicious_excess_404).
    security_404_limit: Positive = 20
    security_404_window_seconds: Positive = 60
    # Per client: this many failed logins within the window is credential stuffing or
    # guessing (authn_login_fail_max).
    security_login_fail_limit: Positive = 10
    security_login_fail_window_seconds: Positive = 300
    # The clients whose counts are kept, per kind; the least recently seen go first.
    security_tracked_clients: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_means_no_token(cls, value: object) -> object:
        return None if value == "" else value
