"""METRICS_PORT: the gunicorn master serves /metrics on a port of its own, the service's
port answers /metrics with 404 and /readyz with its status alone."""

import gzip
import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability.health import (
    register_readiness_check,
)
from {{ cookiecutter.package_name }}.observability.metrics_server import (
    INTERNAL_METRICS_PORT,
)

from .conftest import (
    capture_log_records,
    free_port,
    get,
    gunicorn_start_refused,
    make_settings,
    wait_until,
)
from .test_metrics import sample, worker_pids
from .test_metrics_exposition import PROMETHEUS_ACCEPT

PER_WORKER = "process_worker_resident_memory_bytes"
# Every kind of series: counters, histograms, gauges of each mode, the master's own.
TRAFFIC = ["/api/items/1", "/api/items/2", "/api/fail", "/no-such-page", "/"]


def serve_metrics_apart(gunicorn, workers: int = 2, **settings: str):
    server = gunicorn(workers=workers, METRICS_PORT=str(free_port()), **settings)
    server.metrics_url = f"http://127.0.0.1:{server.env['METRICS_PORT']}/metrics"
    return server


def scrape(url: str) -> str:
    status, _, body = get(url)
    assert status == 200, url
    return body.decode()


def worker_series(text: str) -> set[str]:
    return set(re.findall(PER_WORKER + r'\{pid="(\d+)"\}', text))


def all_workers_report(server, count: int, gone: frozenset[str] = frozenset()) -> set[str]:
    """The workers' pids, once there are `count`, none of them `gone`, each in a scrape."""
    pids = worker_pids(server)
    reporting = worker_series(scrape(server.metrics_url))
    return pids if len(pids) == count and not pids & gone and pids <= reporting else set()


def series(text: str) -> set[str]:
    """Every series of a scrape, name and labels, without the worker pids and the values,
    nor the series of the /metrics route, which exists on the service's port alone."""
    lines = (line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#"))
    return {re.sub(r'pid="\d+"', 'pid=""', line) for line in lines if "/metrics" not in line}


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_the_internal_port_serves_what_the_service_port_would(gunicorn):
    same_port = gunicorn(workers=2)
    apart = serve_metrics_apart(gunicorn, workers=2)
    for server in (same_port, apart):
        for path in TRAFFIC * 10:
            get(f"{server.url}{path}")
    wait_until(lambda: all_workers_report(apart, 2), "both workers in a scrape", 60)

    on_service_port = scrape(f"{same_port.url}/metrics")
    on_internal_port = scrape(apart.metrics_url)
    assert series(on_internal_port) == series(on_service_port)
    for status, count in (("200", 30), ("500", 10), ("404", 10)):
        assert sample(on_internal_port, "flask_http_request_total", status=status) == count


def test_the_service_port_answers_metrics_with_404_and_readiness_with_its_status(gunicorn):
    server = serve_metrics_apart(gunicorn)
    status, _, _ = get(f"{server.url}/metrics")
    assert status == 404
    status, _, body = get(f"{server.url}/readyz")
    assert (status, json.loads(body)) == (200, {"status": "pass"})
    assert sample(scrape(server.metrics_url), "flask_http_request_total") == 0


def test_the_internal_port_serves_metrics_only_and_honours_the_names_asked_for(gunicorn):
    server = serve_metrics_apart(gunicorn, workers=1)
    assert get(f"{server.url}/api/items/1")[0] == 200
    asked = scrape(f"{server.metrics_url}?name[]=flask_http_request_total")
    families = re.findall(r"^# TYPE (\S+)", asked, re.MULTILINE)
    assert families == ["flask_http_request_total"]
    assert get(server.metrics_url.removesuffix("/metrics") + "/readyz")[0] == 404


def test_the_internal_port_answers_prometheus_in_openmetrics_gzipped_as_it_asks(gunicorn):
    server = serve_metrics_apart(gunicorn, workers=1)
    assert get(f"{server.url}/api/items/1")[0] == 200
    asked = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    status, headers, body = get(server.metrics_url, asked)
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    assert 'flask_http_request_total{method="GET",status="200"} 1.0\n' in text


def test_the_internal_port_listens_on_the_services_host_only(gunicorn):
    """The service is bound to 127.0.0.1: its metrics are not on every interface either
    (127.0.0.2 is this host too, and reaches a port bound to all of them)."""
    server = serve_metrics_apart(gunicorn, workers=1)
    assert get(server.metrics_url)[0] == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", int(server.env["METRICS_PORT"])), timeout=10)


def test_the_internal_port_listens_on_the_ipv6_host_the_service_is_bound_to_first(gunicorn):
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = serve_metrics_apart(gunicorn, workers=1, first_bind="[::1]:{port}")
    assert get(f"http://[::1]:{server.env['METRICS_PORT']}/metrics")[0] == 200


def test_the_internal_port_listens_on_every_interface_when_the_service_is_on_a_unix_socket(
    gunicorn, tmp_path
):
    server = serve_metrics_apart(gunicorn, workers=1, first_bind=f"unix:{tmp_path}/service.sock")
    for host in ("127.0.0.1", "127.0.0.2"):
        assert get(f"http://{host}:{server.env['METRICS_PORT']}/metrics")[0] == 200


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_counts_stay_and_dead_workers_go_over_a_kill_and_a_reload(gunicorn):
    server = serve_metrics_apart(gunicorn, workers=2)
    first = wait_until(lambda: all_workers_report(server, 2), "both workers in a scrape", 60)
    for item_id in range(40):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200

    killed = first.pop()
    os.kill(int(killed), signal.SIGKILL)
    after_kill = wait_until(
        lambda: all_workers_report(server, 2, gone=frozenset([killed])),
        "a new worker in place of the killed one",
        60,
    )
    text = scrape(server.metrics_url)
    assert worker_series(text) == after_kill
    assert sample(text, "flask_http_request_total", status="200") == 40

    os.kill(server.process.pid, signal.SIGHUP)  # gunicorn.conf.py runs again in the master
    wait_until(
        lambda: all_workers_report(server, 2, gone=frozenset(after_kill)),
        "two new workers after the reload",
        60,
    )
    for item_id in range(10):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    assert sample(scrape(server.metrics_url), "flask_http_request_total", status="200") == 50
    assert server.process.poll() is None
    assert "Traceback" not in server.output.read_text()


@pytest.mark.parametrize("value", ["0", "70000", "eighty"])
def test_a_bad_metrics_port_stops_the_start_with_one_line(value):
    result = gunicorn_start_refused(METRICS_PORT=value)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "METRICS_PORT" in line]
    assert f"invalid setting METRICS_PORT={value!r}" in line


def test_the_service_port_is_refused_as_metrics_port():
    result = gunicorn_start_refused(PORT="8123", METRICS_PORT="8123")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "invalid setting METRICS_PORT=8123 is PORT too" in result.stderr


def test_a_metrics_port_in_use_stops_the_start_with_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gunicorn_start_refused(PORT=str(free_port()), METRICS_PORT=str(port))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"METRICS_PORT={port}: Address already in use" in result.stderr


@pytest.fixture
def app_with_metrics_apart(monkeypatch, tmp_path):
    """The app as a worker of a master that serves METRICS_PORT makes it."""
    monkeypatch.setattr(INTERNAL_METRICS_PORT, "port", 9100)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    return create_app(make_settings())


def test_a_failing_check_is_told_in_the_log_only(app_with_metrics_apart, capsys):
    log_records = capture_log_records(capsys)

    def database() -> None:
        raise ConnectionError("db.internal:5432 refused")

    register_readiness_check(app_with_metrics_apart, "database", database)
    response = app_with_metrics_apart.test_client().get("/readyz")
    assert (response.status_code, response.get_json()) == (503, {"status": "fail"})
    assert any("db.internal:5432 refused" in record["message"] for record in log_records())


def test_without_the_master_the_app_serves_no_metrics(app_with_metrics_apart):
    assert app_with_metrics_apart.test_client().get("/metrics").status_code == 404
