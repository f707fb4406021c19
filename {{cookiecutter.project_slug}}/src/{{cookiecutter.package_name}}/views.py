"""Example endpoints that show the observability at work; replace them with your own."""

import re
import time
from typing import NoReturn

from flask import Blueprint, Response, abort, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from loguru import logger

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
