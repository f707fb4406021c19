"""Typed settings read from environment variables (and an optional `.env` file).

Every setting is documented in `.env.example`. A bad value stops the service at
start-up with one line naming the variable, instead of failing later or silently.
"""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Literal

from loguru import logger
from pydantic import Field, FilePath, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
{%- if cookiecutter.use_prometheus or cookiecutter.use_security_monitoring or cookiecutter.use_sentry or cookiecutter.use_opentelemetry %}
{% endif %}
{%- if cookiecutter.use_prometheus %}
from .observability.metrics_settings import MetricsSettings
{%- endif %}
{%- if cookiecutter.use_security_monitoring %}
from .observability.security_settings import SecuritySettings
{%- endif %}
{%- if cookiecutter.use_sentry %}
from .observability.sentry_settings import SentrySettings
{%- endif %}
{%- if cookiecutter.use_opentelemetry %}
from .observability.tracing_settings import TracingSettings
{%- endif %}

SERVICE_NAME = "{{ cookiecutter.project_slug }}"

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]

# The forms loguru accepts that we document: a size ("50 MB"), an interval ("1 day")
# or a daily time ("00:00").
_SIZE = r"\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)"
_INTERVAL = r"\d+(\.\d+)?\s*(seconds?|minutes?|hours?|days?|weeks?|months?)"
_DAILY_TIME = r"([01]\d|2[0-3]):[0-5]\d"
ROTATION_PATTERN = re.compile(rf"^({_SIZE}|{_INTERVAL}|{_DAILY_TIME})$", re.IGNORECASE)
RETENTION_PATTERN = re.compile(rf"^(\d+|{_INTERVAL})$", re.IGNORECASE)


def host_and_port(address: str) -> tuple[str, int]:
    """A host and a port from "logs.example.com:6514" or "[::1]:514"; ValueError otherwise."""
    host, colon, port = address.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError('expected host:port ("logs.example.com:6514", "[::1]:514")')
    return host, int(port)


class SettingsError(Exception):
    """A setting from the environment has a value the service cannot run with."""


def _installed_version() -> str:
    try:
        return version(SERVICE_NAME)
    except PackageNotFoundError:
        return "{{ cookiecutter.version }}"


class Settings({% if cookiecutter.use_prometheus %}MetricsSettings, {% endif %}{% if cookiecutter.use_security_monitoring %}SecuritySettings, {% endif %}{% if cookiecutter.use_sentry %}SentrySettings, {% endif %}{% if cookiecutter.use_opentelemetry %}TracingSettings, {% endif %}BaseSettings):
    """The service's settings; a component's own settings come in as a mixin."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    app_env: Literal["development", "staging", "production"] = "production"
    app_release: str = Field(default_factory=lambda: f"{SERVICE_NAME}@{_installed_version()}")

    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] = "{{ cookiecutter.log_format }}"
    log_file: Path | None = {% if cookiecutter.file_logging %}Path("logs/{{ cookiecutter.project_slug }}.log"){% else %}None{% endif %}
    log_rotation: str = "{{ cookiecutter.log_rotation }}"
    log_retention: str = "{{ cookiecutter.log_retention_days }} days"
    log_compression: Literal["gz", "zip", "bz2", "xz", "none"] = "{{ cookiecutter.log_compression }}"
    # Syslog over TCP (see observability/log_syslog.py): off while the address is empty.
    log_syslog_address: str | None = None
    log_syslog_tls: bool = False
    log_syslog_ca_file: FilePath | None = None
    log_syslog_buffer_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024 * 1024

    # While this file exists, /readyz answers 503: touch it to drain an instance before upkeep.
    drain_file: Path | None = None
    # On SIGTERM, /readyz answers 503 and the service serves this long before it stops.
    shutdown_drain_seconds: Annotated[float, Field(ge=0, le=600)] = 0

    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    web_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    gunicorn_timeout: Annotated[int, Field(ge=1)] = 30

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "log_file", "drain_file", "log_syslog_address", "log_syslog_ca_file", mode="before"
    )
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("log_syslog_address")
    @classmethod
    def _syslog_host_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            host_and_port(value)
        return value

    @field_validator("log_rotation")
    @classmethod
    def _known_rotation(cls, value: str) -> str:
        if not ROTATION_PATTERN.match(value.strip()):
            raise ValueError('expected a size ("50 MB"), an interval ("1 day") or a time ("00:00")')
        return value.strip()

    @field_validator("log_retention")
    @classmethod
    def _known_retention(cls, value: str) -> str:
        if not RETENTION_PATTERN.match(value.strip()):
            raise ValueError('expected a number of files ("10") or an interval ("14 days")')
        return value.strip()


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        if not item["loc"]:  # a rule between settings, whose message names them
            problems.append(item["msg"].removeprefix("Value error, "))
            continue
        name = str(item["loc"][0]).upper()
        problems.append(f"{name}={item.get('input')!r}: {item['msg']}")
    return "invalid setting " + "; ".join(problems)


def load_settings() -> Settings:
    """Read the settings, raising SettingsError with a one-line explanation."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


class ServerSettings:
    """The settings of a gunicorn master: loaded and applied at start and again on HUP, and
    inherited by the workers it forks, which never read them again."""

    def __init__(self) -> None:
        self.in_use: Settings | None = None

    def load(self, apply: Callable[[Settings], None]) -> Settings:
        """At start a bad value ends the process with one line. On HUP it is logged and the
        settings in use stay: a master that exits on reload leaves its workers orphaned."""
        try:
            settings = load_settings()
            apply(settings)
        except SettingsError as error:
            if self.in_use is None:
                raise SystemExit(f"{SERVICE_NAME}: {error}") from None
            apply(self.in_use)
            logger.error("reload refused, the settings in use stay: {}", error)
            return self.in_use
        self.in_use = settings
        return settings


# One for the process: gunicorn re-runs gunicorn.conf.py on HUP, and what it applied must
# outlive that.
SERVER_SETTINGS = ServerSettings()


def current_settings() -> Settings:
    """What the gunicorn master applied, in the master and its workers; read from the
    environment anywhere else (the development server, a script)."""
    return SERVER_SETTINGS.in_use or load_settings()


@contextmanager
def exit_on_bad_settings() -> Iterator[None]:
    """For entry points: a bad setting ends the process with one line, not a traceback."""
    try:
        yield
    except SettingsError as error:
        raise SystemExit(f"{SERVICE_NAME}: {error}") from None
