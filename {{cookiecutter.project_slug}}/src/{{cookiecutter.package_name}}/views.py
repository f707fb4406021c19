"""Example endpoints that show the observability at work; replace them with your own."""

from flask import Blueprint, abort, current_app, jsonify
from loguru import logger

from .settings import SERVICE_NAME

views = Blueprint("views", __name__)

KNOWN_ITEMS = 1000


@views.get("/")
def index():
    settings = current_app.config["SETTINGS"]
    return jsonify(service=SERVICE_NAME, release=settings.app_release, environment=settings.app_env)


@views.get("/api/items/<int:item_id>")
def get_item(item_id: int):
    """One route, many URLs: metrics group them under the route, not the URL."""
    if item_id > KNOWN_ITEMS:
        abort(404)
    logger.info("item {} served", item_id)
    return jsonify(id=item_id, name=f"item {item_id}")


@views.get("/api/fail")
def fail():
    """Raises on purpose, to show how an unhandled error is logged and reported."""
    raise RuntimeError("failure requested by /api/fail")
