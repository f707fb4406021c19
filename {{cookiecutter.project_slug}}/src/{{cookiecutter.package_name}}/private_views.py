"""An example endpoint behind a token, to show security events at work; replace it with yours."""

import hmac

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from .observability.security import security_event

private_views = Blueprint("private_views", __name__)


@private_views.get("/api/private")
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
