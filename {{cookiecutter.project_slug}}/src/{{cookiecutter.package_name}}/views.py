"""Example endpoints that show the observability at work; replace them with your own."""
{% if cookiecutter.use_security_monitoring %}
import hmac
{%- endif %}
import re
import time
from typing import NoReturn

from flask import Blueprint, Response, abort, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from loguru import logger

{% if cookiecutter.use_security_monitoring -%}
from .observability.security import security_event
{% endif -%}
from .settings import SERVICE_NAME

views = Blueprint("views", __name__)

KNOWN_ITEMS = 1000
# Long enough to cross any sensible latency alert, far below the gunicorn timeout.
SLOWEST_MS = 2000
# Plain digits only: int() alone would also take " 5", "+5" and "1_000".
MILLISECONDS = re.compile(r"[0-9]{1,4}")


@views.get("/")
def index() -> Response:
    settings = current_app.config["SETTINGS"]
    return jsonify(service=SERVICE_NAME, release=settings.app_release, environment=settings.app_env)


@views.get("/api/items/<int:item_id>")
def get_item(item_id: int) -> Response:
    """One route, many URLs: metrics group them under the route, not the URL."""
    if item_id > KNOWN_ITEMS:
        abort(404)
    logger.info("item {} served", item_id)
    return jsonify(id=item_id, name=f"item {item_id}")


@views.get("/api/fail")
def fail() -> NoReturn:
    """Raises on purpose, to show how an unhandled error is logged and reported."""
    raise RuntimeError("failure requested by /api/fail")


@views.get("/api/slow")
def slow() -> ResponseReturnValue:
    """Answers after ?ms= milliseconds: a slow request on demand, to watch latency."""
    raw = request.args.get("ms", "")
    if not MILLISECONDS.fullmatch(raw) or int(raw) > SLOWEST_MS:
        message = f"ms must be a whole number of milliseconds from 0 to {SLOWEST_MS}"
        return jsonify(error=message), 400
    time.sleep(int(raw) / 1000)
    return jsonify(slept_ms=int(raw))
{%- if cookiecutter.use_security_monitoring %}


@views.get("/api/private")
def private() -> ResponseReturnValue:
    """Answers only to `Authorization: Bearer <API_TOKEN>`: anything else is a failed login,
    recorded as a security event (and counted against the client's threshold)."""
    token = current_app.config["SETTINGS"].api_token
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not given or scheme.lower() != "bearer":
        security_event("authn_login_fail", reason="no bearer token")
    # Bytes: compare_digest refuses text that is not ASCII, which a header may well hold.
    elif token is None or not hmac.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        security_event("authn_login_fail", reason="wrong token")
    else:
        return jsonify(message="the token is right")
    return jsonify(error="a valid bearer token is required"), 401, {"WWW-Authenticate": "Bearer"}
{%- endif %}
