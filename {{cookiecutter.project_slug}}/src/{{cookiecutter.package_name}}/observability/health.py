"""Liveness and readiness endpoints in the `application/health+json` shape.

- `/livez` answers as long as the process can serve a request; it never looks at
  dependencies, so a database outage does not make the orchestrator restart every pod.
- `/readyz` runs every registered readiness check and answers 503 when one fails, so
  the load balancer stops sending traffic until the dependency is back.
- `/healthz` is the same as `/readyz`, for tools that only know that name.

Register a check with `register_readiness_check(app, "database", ping_database)`:
the function returns normally when ready and raises (or returns False) when not.

A component that moves the service's internals off its public port calls
`hide_readiness_details(app)`: `/readyz` then answers with its status alone, and a failing
check's reason is in the log only.

Paths that machines poll (these probes, a metrics scrape) are registered with
`register_polled_path`: the components that trace requests leave them out.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, jsonify
from loguru import logger

HEALTH_MEDIA_TYPE = "application/health+json"
HEALTH_PATHS = ("/livez", "/readyz", "/healthz")

ReadinessCheck = Callable[[], object]
CheckResult = dict[str, str]  # status, time and, for a failure, its output

health = Blueprint("health", __name__)


def init_health(app: Flask, drain_file: Path | None = None) -> None:
    app.extensions["readiness_checks"] = {}
    app.register_blueprint(health)
    for path in HEALTH_PATHS:
        register_polled_path(app, path)
    if drain_file is not None:
        register_readiness_check(app, "drain", lambda: _not_draining(drain_file))


def register_readiness_check(app: Flask, name: str, check: ReadinessCheck) -> None:
    app.extensions["readiness_checks"][name] = check


def hide_readiness_details(app: Flask) -> None:
    app.extensions["readiness_details_hidden"] = True


def register_polled_path(app: Flask, path: str) -> None:
    app.extensions.setdefault("polled_paths", set()).add(path)


def polled_paths(app: Flask) -> set[str]:
    """The paths that probes and scrapers poll, as the components registered them."""
    return app.extensions.get("polled_paths", set())  # type: ignore[no-any-return]


@health.get("/livez")
def livez() -> Response:
    return _health_response("pass", {})


@health.get("/readyz")
@health.get("/healthz")
def readyz() -> Response:
    results = {
        name: [_run_check(name, check)]
        for name, check in current_app.extensions["readiness_checks"].items()
    }
    failed = any(result[0]["status"] == "fail" for result in results.values())
    if current_app.extensions.get("readiness_details_hidden"):
        results = {}  # what fails, and why, is logged by _run_check
    return _health_response("fail" if failed else "pass", results)


def _not_draining(drain_file: Path) -> None:
    if drain_file.exists():
        raise RuntimeError(f"draining: {drain_file} exists")


def _run_check(name: str, check: ReadinessCheck) -> CheckResult:
    result = {"status": "pass", "time": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        if check() is False:
            result.update(status="fail", output="check returned False")
    except Exception as error:  # a failing dependency must answer 503, not 500
        logger.warning("readiness check {} failed: {}", name, error)
        result.update(status="fail", output=f"{type(error).__name__}: {error}")
    return result


def _health_response(status: str, checks: dict[str, list[CheckResult]]) -> Response:
    body: dict[str, object] = {"status": status, "checks": checks} if checks else {"status": status}
    response = jsonify(body)
    response.status_code = 503 if status == "fail" else 200
    response.mimetype = HEALTH_MEDIA_TYPE
    response.headers["Cache-Control"] = "no-store"
    return response
