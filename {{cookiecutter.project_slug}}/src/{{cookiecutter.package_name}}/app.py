"""The application factory (settings first, then one line per observability component) and
the Flask class it makes."""

from collections.abc import Callable
from typing import Any

from flask import Flask
{% if cookiecutter.use_sentry %}
from .observability.errors import init_error_reporting
{%- endif %}
from .observability.health import init_health
from .observability.logging import configure_logging
{%- if cookiecutter.use_prometheus %}
from .observability.metrics import init_metrics
{%- endif %}
from .observability.request_context import init_request_context
{%- if cookiecutter.use_security_monitoring %}
from .observability.security import init_security_monitoring
{%- endif %}
{%- if cookiecutter.use_security_monitoring and cookiecutter.use_prometheus %}
from .observability.security_metrics import init_security_metrics
{%- endif %}
from .observability.shutdown import init_shutdown_drain
from .observability.timeouts import init_request_timeouts
{%- if cookiecutter.use_opentelemetry %}
from .observability.tracing import init_tracing
{%- endif %}
{%- if cookiecutter.use_opentelemetry and cookiecutter.use_prometheus %}
from .observability.tracing_metrics import init_tracing_metrics
{%- endif %}
{%- if cookiecutter.use_security_monitoring %}
from .private_views import private_views
{%- endif %}
from .settings import SERVER_SETTINGS, Settings, current_settings, exit_on_bad_settings
from .views import views

# Functions known to be plain (no coroutine functions): the hooks and views, a few dozen.
# Bounded all the same, in case an extension hands Flask a new function at each request.
MAX_KNOWN_PLAIN_FUNCTIONS = 256


class ServiceApp(Flask):
    """Flask, asking once per hook or view whether it is a coroutine function. Flask asks
    at every call: a dozen times a request with every component on, 4 % of the instructions
    that such a request costs the worker."""

    def __init__(self, import_name: str) -> None:
        super().__init__(import_name)
        self._known_plain: set[Callable[..., Any]] = set()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            if func in self._known_plain:
                return func
        except TypeError:  # an unhashable callable: asked at each call, as Flask does
            return super().ensure_sync(func)
        synchronous = super().ensure_sync(func)
        if synchronous is func and len(self._known_plain) < MAX_KNOWN_PLAIN_FUNCTIONS:
            self._known_plain.add(func)
        return synchronous


def create_app(settings: Settings | None = None) -> Flask:
    with exit_on_bad_settings():
        settings = settings or current_settings()
        if SERVER_SETTINGS.in_use is None:  # under gunicorn, the master has set logging up
            configure_logging(settings)  # first: the components below log, some add sinks

    app = ServiceApp(__name__)
    app.config["SETTINGS"] = settings
    init_request_context(app)  # first: its middleware, innermost, sees the request's span
{%- if cookiecutter.use_opentelemetry %}
    init_tracing(app, settings)  # then: the other components' middlewares go around its span
{%- endif %}
    init_request_timeouts(app)
{%- if cookiecutter.use_sentry %}
    init_error_reporting(app, settings)
{%- endif %}
    init_health(app, drain_file=settings.drain_file)
    init_shutdown_drain(app, settings.shutdown_drain_seconds)
{%- if cookiecutter.use_prometheus %}
    init_metrics(app)
{%- endif %}
{%- if cookiecutter.use_security_monitoring %}
    init_security_monitoring(app, settings)
{%- endif %}
{%- if cookiecutter.use_security_monitoring and cookiecutter.use_prometheus %}
    init_security_metrics(app)
{%- endif %}
{%- if cookiecutter.use_opentelemetry and cookiecutter.use_prometheus %}
    init_tracing_metrics(app)
{%- endif %}

    app.register_blueprint(views)
{%- if cookiecutter.use_security_monitoring %}
    app.register_blueprint(private_views)
{%- endif %}
    return app
