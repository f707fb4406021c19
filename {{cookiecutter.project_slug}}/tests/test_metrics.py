import contextlib
import mmap
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import prometheus_flask_exporter
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import (
    metrics,
    metrics_directory,
)
from {{ cookiecutter.package_name }}.observability.health import polled_paths
from {{ cookiecutter.package_name }}.observability.metrics_directory import (
    MetricsDirectory,
)
from {{ cookiecutter.package_name }}.observability.timeouts import (
    RequestTimeout,
    end_timed_out_request,
)

from . import stuck_app
from .conftest import PROJECT_DIR, get, make_settings, run_script

PROMETHEUS_FLASK_EXPORTER = prometheus_flask_exporter.__version__


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one series, 0 when it does not exist yet."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = re.match(name + r"(?:\{(.*)\})? (\S+)$", line)
        found_labels = (match.group(1) or "") if match else ""
        if match and all(f'{key}="{value}"' in found_labels for key, value in labels.items()):
            total += float(match.group(2))
    return total


def timed_requests(metrics_text: str, route: str, status: str) -> float:
    """How many requests the duration histogram holds for a route and status."""
    return sample(
        metrics_text, "flask_http_request_duration_seconds_count", url_rule=route, status=status
    )


def scrape(client) -> str:
    return client.get("/metrics").get_data(as_text=True)


def current_value(app, name: str) -> float | None:
    """A series of the app's own registry, read in the process without a scrape."""
    return app.extensions["metrics"].registry.get_sample_value(name)


def burn_cpu(seconds: float) -> None:
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass


def test_requests_are_counted_by_status_and_route(client):
    for item_id in range(1, 6):
        client.get(f"/api/items/{item_id}")
    client.get("/api/items/5000")
    client.get("/api/fail")
    text = scrape(client)
    assert sample(text, "flask_http_request_total", status="200") == 5
    assert sample(text, "flask_http_request_total", status="404") == 1
    assert sample(text, "flask_http_request_total", status="500") == 1
    assert timed_requests(text, "/api/items/<int:item_id>", "200") == 5


def test_a_request_that_raises_is_counted_as_an_exception_and_timed_with_status_500(client):
    for path in ("/api/fail", "/api/fail", "/api/items/5000"):
        client.get(path)
    text = scrape(client)
    assert sample(text, "flask_http_request_exceptions_total", status="500") == 2
    assert sample(text, "flask_http_request_exceptions_total") == 2  # a 404 raised nothing
    assert timed_requests(text, "/api/fail", "500") == 2


def test_a_request_whose_answer_cannot_be_made_is_counted_once_with_status_500(app):
    @app.after_request
    def break_the_answer(response):
        raise RuntimeError("an after_request hook failed")

    client = app.test_client()
    assert client.get("/api/items/1").status_code == 500
    app.after_request_funcs[None].remove(break_the_answer)
    text = scrape(client)
    assert sample(text, "flask_http_request_total") == 1
    assert sample(text, "flask_http_request_total", status="500") == 1
    assert sample(text, "flask_http_request_exceptions_total", status="500") == 1
    assert timed_requests(text, "/api/items/<int:item_id>", "500") == 1
    assert current_value(app, "flask_http_requests_in_flight") == 0


def test_a_view_the_exporter_is_told_not_to_track_is_not_counted(app):
    exporter = app.extensions["metrics"]

    @app.get("/untracked")
    @exporter.do_not_track()
    def untracked():
        return "not counted"

    client = app.test_client()
    assert client.get("/untracked").status_code == 200
    client.get("/api/items/1")
    text = scrape(client)
    assert sample(text, "flask_http_request_total") == 1
    assert sample(text, "flask_http_request_duration_seconds_count", url_rule="/untracked") == 0


def test_the_exporter_reports_its_version(client):
    assert sample(scrape(client), "flask_exporter_info", version=PROMETHEUS_FLASK_EXPORTER) == 1


def test_distinct_urls_do_not_make_distinct_series(client):
    for item_id in range(300):
        client.get(f"/api/items/{item_id}")
    for number in range(50):
        client.get(f"/wp-admin/{number}.php")
    series = [
        line for line in scrape(client).splitlines()
        if line.startswith("flask_http_request_duration_seconds_count")
    ]  # fmt: skip
    assert len(series) == 2  # the items route, and every unknown URL together


def test_probes_and_scrapes_are_not_counted(client):
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        client.get(path)
    assert sample(scrape(client), "flask_http_request_total") == 0


def test_scrapes_are_left_out_of_request_tracing(app):
    """The components that trace requests skip the paths registered as polled."""
    assert metrics.METRICS_PATH in polled_paths(app)


def test_without_gunicorn_the_process_and_python_metrics_are_exported(client):
    """Registered on the app's own registry: on none, or on the default one, they vanish."""
    text = scrape(client)
    assert "python_info{" in text
    assert "python_gc_objects_collected_total{" in text
    if Path("/proc/self/stat").exists():  # ProcessCollector reads /proc: Linux only
        assert sample(text, "process_cpu_seconds_total") > 0
        assert sample(text, "process_resident_memory_bytes") > 1e6


def test_each_app_in_a_process_has_working_metrics():
    first = create_app(make_settings()).test_client()
    second = create_app(make_settings()).test_client()
    first.get("/")
    second.get("/")
    second.get("/")
    assert sample(scrape(first), "flask_http_request_total") == 1
    assert sample(scrape(second), "flask_http_request_total") == 2


def test_counts_are_exact_across_gunicorn_workers(gunicorn):
    server = gunicorn(workers=3)
    for item_id in range(120):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    for _ in range(30):
        get(f"{server.url}/api/fail")
    text = get(f"{server.url}/metrics")[2].decode()
    assert sample(text, "flask_http_request_total", status="200") == 120
    assert sample(text, "flask_http_request_total", status="500") == 30
    assert sample(text, "flask_http_request_duration_seconds_count", status="500") == 30


def test_a_scrape_without_gunicorn_honours_the_names_asked_for(client):
    """The process metrics, whose collector describes nothing, included."""
    wanted = ["process_resident_memory_bytes", "flask_http_requests_in_flight"]
    body = client.get("/metrics?" + "&".join(f"name[]={name}" for name in wanted)).text
    assert set(re.findall(r"^# TYPE (\S+)", body, re.MULTILINE)) == set(wanted)


def test_a_gunicorn_scrape_honours_the_names_asked_for_and_openmetrics(gunicorn):
    server = gunicorn(workers=1)
    assert get(f"{server.url}/api/items/1")[0] == 200
    _, _, body = get(f"{server.url}/metrics?name[]=flask_http_request_total")
    families = set(re.findall(r"^# TYPE (\S+)", body.decode(), re.MULTILINE))
    assert families == {"flask_http_request_total"}

    openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    _, headers, body = get(f"{server.url}/metrics", {"Accept": openmetrics})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")  # the end mark of OpenMetrics only


def test_a_request_is_in_flight_while_it_is_served(app):
    seen_while_serving = []

    @app.get("/probe-in-flight")
    def probe():
        seen_while_serving.append(current_value(app, "flask_http_requests_in_flight"))
        return "ok"

    app.test_client().get("/probe-in-flight")
    assert seen_while_serving == [1]
    assert current_value(app, "flask_http_requests_in_flight") == 0


def test_a_request_that_raises_is_no_longer_in_flight(app, client):
    assert client.get("/api/fail").status_code == 500
    assert current_value(app, "flask_http_requests_in_flight") == 0


def test_unhandled_exceptions_are_counted_by_type_and_route(app):
    @app.get("/lookup/<key>")
    def lookup(key: str):
        raise KeyError(key)

    client = app.test_client()
    for path in ("/api/fail", "/api/fail", "/lookup/a", "/lookup/b", "/api/items/5000"):
        client.get(path)
    text = scrape(client)
    name = "flask_http_request_exceptions_by_type_total"
    assert sample(text, name, exception_type="RuntimeError", url_rule="/api/fail") == 2
    # By route, not by URL: one series for every key.
    assert sample(text, name, exception_type="KeyError", url_rule="/lookup/<key>") == 2
    assert sample(text, name) == 4  # a 404 is an answer, not an exception


def test_requests_ended_by_the_worker_timeout_are_counted_by_route(app):
    for path in ("/api/slow?ms=1", "/api/items/7", "/api/items/8"):
        with app.test_request_context(path), pytest.raises(RequestTimeout):
            end_timed_out_request(timeout_seconds=1)
    text = scrape(app.test_client())
    name = "flask_http_request_timeouts_total"
    assert sample(text, name, url_rule="/api/items/<int:item_id>") == 2
    assert sample(text, name, url_rule="/api/slow") == 1


def test_each_app_counts_only_its_own_exceptions_and_timeouts():
    """Tests and scripts make several apps in one process: each has its own registry."""
    first, second = create_app(make_settings()), create_app(make_settings())
    assert second.test_client().get("/api/fail").status_code == 500
    with second.test_request_context("/api/items/7"), pytest.raises(RequestTimeout):
        end_timed_out_request(timeout_seconds=1)
    for app, counted in ((first, 0), (second, 1)):
        text = scrape(app.test_client())
        assert sample(text, "flask_http_request_exceptions_by_type_total") == counted
        assert sample(text, "flask_http_request_timeouts_total") == counted


def test_every_route_starts_with_no_timeouts_so_that_the_first_one_shows(client):
    client.get("/api/items/1")
    text = scrape(client)
    for route in ("/api/slow", "/api/items/<int:item_id>", "/"):
        series = 'flask_http_request_timeouts_total{url_rule="' + route + '"}'
        assert f"{series} 0.0" in text


def test_a_timed_out_request_stays_counted_after_its_worker_is_gone(gunicorn):
    server = gunicorn(workers=2, app=stuck_app.APP, GUNICORN_TIMEOUT="1")
    assert get(f"{server.url}/stuck", timeout=stuck_app.STUCK_SECONDS)[0] == 500
    text = get(f"{server.url}/metrics")[2].decode()
    assert sample(text, "flask_http_request_timeouts_total", url_rule="/stuck") == 1


def test_the_process_reports_its_cpu_and_memory(app):
    assert current_value(app, "process_worker_cpu_seconds") > 0
    if metrics.STATM.exists():  # Linux only
        assert current_value(app, "process_worker_resident_memory_bytes") > 1e6


def test_a_request_refreshes_the_cpu_time(monkeypatch):
    monkeypatch.setattr(metrics, "WORKER_RESOURCES_REFRESH_SECONDS", 0)
    app = create_app(make_settings())
    before = current_value(app, "process_worker_cpu_seconds")
    burn_cpu(0.05)  # os.times() counts in clock ticks of 10 ms
    app.test_client().get("/")
    assert current_value(app, "process_worker_cpu_seconds") > before


def fake_process(monkeypatch, tmp_path, cpu_seconds: float, resident_pages: int) -> None:
    """What os.times() and /proc/self/statm say of this process, from now on."""
    statm = tmp_path / "statm"
    statm.write_text(f"90000 {resident_pages} 300 1 0 500 0\n")
    monkeypatch.setattr(metrics, "STATM", statm)
    times = SimpleNamespace(user=cpu_seconds * 0.75, system=cpu_seconds * 0.25)
    monkeypatch.setattr(metrics.os, "times", lambda: times)


def test_cpu_is_user_and_system_time_and_memory_the_resident_pages(monkeypatch, tmp_path):
    fake_process(monkeypatch, tmp_path, cpu_seconds=4.0, resident_pages=2000)
    app = create_app(make_settings())
    assert current_value(app, "process_worker_cpu_seconds") == 4.0
    assert current_value(app, "process_worker_resident_memory_bytes") == 2000 * mmap.PAGESIZE


def test_requests_within_the_refresh_interval_do_not_read_the_process_again(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "WORKER_RESOURCES_REFRESH_SECONDS", 3600)
    fake_process(monkeypatch, tmp_path, cpu_seconds=4.0, resident_pages=2000)
    app = create_app(make_settings())
    fake_process(monkeypatch, tmp_path, cpu_seconds=8.0, resident_pages=3000)
    app.test_client().get("/")
    assert current_value(app, "process_worker_cpu_seconds") == 4.0


def worker_values(server, name: str) -> dict[str, float]:
    """pid -> value of a per-worker series, from a scrape."""
    text = get(f"{server.url}/metrics")[2].decode()
    return {pid: float(value) for pid, value in re.findall(name + r'\{pid="(\d+)"\} (\S+)', text)}


def test_each_gunicorn_worker_reports_its_cpu_and_memory(gunicorn):
    server = gunicorn(workers=2)
    deadline = time.monotonic() + 20
    for name in ("process_worker_cpu_seconds", "process_worker_resident_memory_bytes"):
        # Workers report when they start, and the second may still be starting.
        while len(values := worker_values(server, name)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(values) == 2, name
        assert str(server.process.pid) not in values  # the master serves nothing


def worker_pids(server) -> set[str]:
    master = server.process.pid
    return set(Path(f"/proc/{master}/task/{master}/children").read_text().split())


def wait_for_new_workers(server, count: int, gone: set[str]) -> set[str]:
    """The pids of `count` workers, none of them in `gone`, once they all report."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = worker_pids(server)
        reporting = set(worker_values(server, "process_worker_resident_memory_bytes"))
        if len(pids) == count and not pids & gone and pids <= reporting:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{count} new workers did not start and report within 20 s")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_workers_killed_mid_request_leave_no_series_behind(gunicorn):
    server = gunicorn(workers=2, app=stuck_app.APP)
    first = wait_for_new_workers(server, 2, gone=set())
    stuck = threading.Thread(target=get_cut_off, args=(f"{server.url}/stuck",))
    stuck.start()
    deadline = time.monotonic() + 20
    while sample(scrape_server(server), "flask_http_requests_in_flight") < 1:
        assert time.monotonic() < deadline, "the stuck request never started"
        time.sleep(0.05)
    for pid in first:
        os.kill(int(pid), signal.SIGKILL)
    stuck.join()

    second = wait_for_new_workers(server, 2, gone=first)
    text = scrape_server(server)
    for name in ("process_worker_cpu_seconds", "process_worker_resident_memory_bytes"):
        assert set(worker_values(server, name)) == second, name
    assert sample(text, "flask_http_requests_in_flight") == 0


def test_a_restart_with_the_same_metrics_directory_starts_from_zero(gunicorn, tmp_path):
    metrics_dir = str(tmp_path / "run" / "metrics")  # made, with its parent, at the first start
    for run in range(2):
        server = gunicorn(workers=2, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        for _ in range(5):
            assert get(f"{server.url}/api/items/1")[0] == 200
        text = scrape_server(server)
        assert sample(text, "flask_http_request_total", status="200") == 5, f"run {run + 1}"
        server.stop()


def test_the_temporary_folders_the_master_made_go_when_it_stops(gunicorn, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    # No PROMETHEUS_MULTIPROC_DIR: the master makes a metrics folder, as it does a relay's.
    server = gunicorn(workers=1, PROMETHEUS_MULTIPROC_DIR="", TMPDIR=str(temporary))
    assert get(f"{server.url}/api/items/1")[0] == 200
    [metrics_folder] = temporary.glob("metrics-*")
    assert list(metrics_folder.glob("*.db")), "the worker writes its samples elsewhere"
    server.stop()
    assert list(temporary.iterdir()) == []


def test_a_metrics_directory_that_cannot_go_is_emptied(monkeypatch, tmp_path):
    """A mount point (a tmpfs, a Kubernetes emptyDir) can only be emptied, not removed."""
    directory = tmp_path / "metrics"
    (directory / "old").mkdir(parents=True)
    (directory / "counter_1.db").write_bytes(b"an earlier run's counts")
    remove_tree = shutil.rmtree

    def remove_all_but_the_mount_point(path, ignore_errors=False):
        for entry in Path(path).iterdir():
            remove_tree(entry) if entry.is_dir() else entry.unlink()

    monkeypatch.setattr(metrics_directory.shutil, "rmtree", remove_all_but_the_mount_point)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    MetricsDirectory()
    assert directory.is_dir()
    assert list(directory.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_a_reload_keeps_the_counts_of_the_workers_it_replaces(gunicorn):
    server = gunicorn(workers=2)
    first = wait_for_new_workers(server, 2, gone=set())
    for _ in range(5):
        assert get(f"{server.url}/api/items/1")[0] == 200
    os.kill(server.process.pid, signal.SIGHUP)  # gunicorn.conf.py runs again, new workers start
    wait_for_new_workers(server, 2, gone=first)
    assert sample(scrape_server(server), "flask_http_request_total", status="200") == 5


def get_cut_off(url: str) -> None:
    """A request whose worker is killed: the connection breaks."""
    with contextlib.suppress(OSError):
        get(url)


def scrape_server(server) -> str:
    return get(f"{server.url}/metrics")[2].decode()


# The gunicorn master in miniature: prometheus_client in multiprocess mode, lines lost twice.
LOSE_LOG_LINES = """
from {module} import count_lost_log_lines

count_lost_log_lines("console", "reader_stuck", 7)
count_lost_log_lines("console", "reader_stuck", 5)
count_lost_log_lines("file", "write_failed", 3)
"""


def test_lost_log_lines_are_counted_by_sink_and_reason(tmp_path):
    environment = {
        **os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONPATH": str(PROJECT_DIR / "src"),
    }  # fmt: skip
    subprocess.run(
        [sys.executable, "-c", LOSE_LOG_LINES.format(module=metrics.__name__)],
        env=environment, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    text = generate_latest(registry).decode()
    name = "log_lines_dropped_total"
    assert sample(text, name, sink="console", reason="reader_stuck") == 12
    assert sample(text, name, sink="file", reason="write_failed") == 3
    assert sample(text, name) == 15


def test_log_lines_the_master_cannot_write_are_in_metrics(gunicorn, tmp_path):
    # The log file is a named pipe whose reader goes away: each write fails with EPIPE.
    log_file = tmp_path / "service.log"
    os.mkfifo(log_file)
    reader = os.open(log_file, os.O_RDONLY | os.O_NONBLOCK)
    server = gunicorn(workers=1, LOG_FILE=str(log_file), LOG_ROTATION="1 GB",
                      LOG_COMPRESSION="none")  # fmt: skip
    os.close(reader)
    lost = {"sink": "file", "reason": "write_error"}
    for _ in range(3):  # an access line each, at least
        get(f"{server.url}/api/items/1")
    deadline = time.monotonic() + 60
    while sample(scrape_server(server), "log_lines_dropped_total", **lost) < 3:
        assert time.monotonic() < deadline, "the lost lines were not counted"
        time.sleep(0.1)


def test_the_master_imports_the_metrics_before_it_forks_a_worker(tmp_path):
    """Its threads count lost log lines and alerts: were the first count to import
    prometheus_client, a worker forked meanwhile would inherit the import lock taken, and
    hang at boot."""
    package = "{{ cookiecutter.package_name }}.observability"
    script = (
        "import importlib, os, sys\n"
        "directory = importlib.import_module(os.environ['PACKAGE'] + '.metrics_directory')\n"
        "directory.prepare_metrics_directory().on_starting(None)\n"
        "assert 'prometheus_client' in sys.modules\n"
        "assert os.environ['PACKAGE'] + '.metrics' in sys.modules\n"
    )
    run_script(
        script, tmp_path, PACKAGE=package, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics")
    )
