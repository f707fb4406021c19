"""The default project, served by real gunicorn with three workers."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from .service import GunicornService

# path -> expected status; 40 rounds give 200 requests over the workers.
MIX = {"/api/items/1": 200, "/api/items/77": 200, "/": 200, "/api/items/5000": 404,
       "/api/fail": 500}  # fmt: skip
ROUNDS = 40


@pytest.fixture
def service(baked, tmp_path):
    server = GunicornService(baked("all-defaults"), tmp_path, workers=3).start()
    server.wait_for_workers(3)  # the test below counts on more than one
    yield server
    server.stop()


def test_health_endpoints_answer(service):
    for path in ("/livez", "/readyz", "/healthz"):
        response = service.get(path)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/health+json"
        assert response.json()["status"] == "pass"


def test_metrics_count_exactly_the_requests_sent_across_workers(service):
    requests_to_send = [path for _ in range(ROUNDS) for path in MIX]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda path: service.get(path).status_code, requests_to_send))
    assert statuses == [MIX[path] for path in requests_to_send]

    expected = {"200": 3 * ROUNDS, "404": ROUNDS, "500": ROUNDS}
    for status, count in expected.items():
        assert service.metric("flask_http_request_total", status=status) == count
        assert service.metric("flask_http_request_duration_seconds_count", status=status) == count
    assert service.metric("flask_http_request_total", status="200") == 3 * ROUNDS

    service.stop()
    access = [
        record for record in _log_records(service)
        if record.get("log.logger") == "gunicorn.access"
    ]  # fmt: skip
    served = [record for record in access if record["url.path"] in MIX]
    assert len(served) == len(requests_to_send)
    assert len({record["http.request.id"] for record in served}) == len(served)
    assert len({record["process.pid"] for record in access}) >= 2, "one worker did everything"


def test_request_id_is_echoed_and_logged(service):
    response = service.get("/api/items/3", headers={"X-Request-ID": "served-req-3"})
    assert response.headers["X-Request-ID"] == "served-req-3"
    service.stop()
    loggers = {
        record["log.logger"]
        for record in _log_records(service)
        if record.get("http.request.id") == "served-req-3"
    }
    assert loggers == {"my_service.views", "gunicorn.access"}


def _log_records(service) -> list[dict]:
    lines = (service.log_dir / "service.log").read_text().splitlines()
    return [json.loads(line) for line in lines]
