"""The service as it runs: under gunicorn in production, on the development server."""

import json
import subprocess
import sys

from .conftest import PROJECT_DIR, get


def test_serves_under_gunicorn_with_request_ids_in_the_access_log(gunicorn, tmp_path):
    server = gunicorn(workers=2)
    assert get(f"{server.url}/livez")[0] == 200
    assert get(f"{server.url}/readyz")[0] == 200
    status, headers, _ = get(f"{server.url}/api/items/3", {"X-Request-ID": "served-3"})
    assert status == 200
    assert headers["X-Request-ID"] == "served-3"
    server.stop()

    log_lines = (tmp_path / "logs" / "service.log").read_text().splitlines()
    records = [json.loads(line) for line in log_lines]  # every line is one JSON object
    served = [record for record in records if record.get("http.request.id") == "served-3"]
    assert {record["log.logger"] for record in served} == {
        "{{ cookiecutter.package_name }}.views",
        "gunicorn.access",
    }


def test_the_development_server_serves_too(start_service):
    command = [sys.executable, "-m", "{{ cookiecutter.package_name }}"]
    server = start_service(command, LOG_FORMAT="text")
    assert get(f"{server.url}/livez")[0] == 200
    status, headers, _ = get(f"{server.url}/api/items/4")
    assert status == 200
    assert len(headers["X-Request-ID"]) == 32


def test_a_bad_setting_stops_gunicorn_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=PROJECT_DIR,
        env={"LOG_LEVEL": "LOUD", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR / "src")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "invalid setting LOG_LEVEL='LOUD'" in result.stderr
