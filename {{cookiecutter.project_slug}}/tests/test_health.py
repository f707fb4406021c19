import re
from datetime import UTC, datetime

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability.health import (
    register_readiness_check,
)

from .conftest import capture_log_records, make_settings

HEALTH_JSON = "application/health+json"
UTC_TIME_IN_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


def test_liveness_passes(client):
    response = client.get("/livez")
    assert response.status_code == 200
    assert response.mimetype == HEALTH_JSON
    assert response.get_json() == {"status": "pass"}


def test_readiness_passes_with_no_checks(client):
    for path in ("/readyz", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_json()["status"] == "pass"


def test_readiness_fails_while_a_check_fails_and_recovers_after(app, client):
    database_up = True

    def database():
        if not database_up:
            raise ConnectionError("database unreachable")

    register_readiness_check(app, "database", database)
    assert client.get("/readyz").status_code == 200

    database_up = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == HEALTH_JSON
    body = response.get_json()
    assert body["status"] == "fail"
    assert body["checks"]["database"][0]["status"] == "fail"
    assert "database unreachable" in body["checks"]["database"][0]["output"]
    assert client.get("/livez").status_code == 200, "liveness must not depend on the database"

    database_up = True
    assert client.get("/readyz").status_code == 200


def test_a_check_returning_false_fails_readiness(app, client):
    register_readiness_check(app, "queue", lambda: False)
    assert client.get("/healthz").status_code == 503


def test_a_drain_file_takes_the_instance_out_of_rotation(tmp_path):
    drain_file = tmp_path / "drain"
    client = create_app(make_settings(drain_file=drain_file)).test_client()
    assert client.get("/readyz").status_code == 200
    drain_file.touch()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "draining" in response.get_json()["checks"]["drain"][0]["output"]
    assert client.get("/livez").status_code == 200
    drain_file.unlink()
    assert client.get("/readyz").status_code == 200


def test_each_check_reports_its_status_time_and_why_it_failed(app, client, capsys):
    def database():
        raise ConnectionError("database unreachable")

    log_records = capture_log_records(capsys)
    register_readiness_check(app, "cache", lambda: None)
    register_readiness_check(app, "queue", lambda: False)
    register_readiness_check(app, "database", database)
    before = datetime.now(UTC).replace(microsecond=0)
    response = client.get("/readyz")
    after = datetime.now(UTC)

    assert response.status_code == 503
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["status"] == "fail"
    assert sorted(body["checks"]) == ["cache", "database", "queue"]
    for name, results in body["checks"].items():
        assert len(results) == 1, name
        assert UTC_TIME_IN_SECONDS.fullmatch(results[0]["time"]), results[0]["time"]
        assert before <= datetime.fromisoformat(results[0]["time"]) <= after
    results = {name: {**results[0], "time": None} for name, results in body["checks"].items()}
    assert results == {
        "cache": {"status": "pass", "time": None},
        "queue": {"status": "fail", "time": None, "output": "check returned False"},
        "database": {
            "status": "fail",
            "time": None,
            "output": "ConnectionError: database unreachable",
        },
    }
    warnings = [record for record in log_records() if record["log.level"] == "warning"]
    assert [record["message"] for record in warnings] == [
        "readiness check database failed: database unreachable"
    ]


def test_readiness_with_passing_checks_lists_them(app, client):
    register_readiness_check(app, "cache", lambda: None)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["status"] == "pass"
    assert response.get_json()["checks"]["cache"][0]["status"] == "pass"
