from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability.health import (
    register_readiness_check,
)

from .conftest import make_settings

HEALTH_JSON = "application/health+json"


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
