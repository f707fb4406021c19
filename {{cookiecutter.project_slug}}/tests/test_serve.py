"""The service as it runs: under gunicorn in production, on the development server."""

import json
import os
import sys
from pathlib import Path

import pytest

from . import gc_app
from .conftest import get, gunicorn_start_refused, wait_until
from .ecs import ecs_record, ecs_records


def test_serves_under_gunicorn_with_request_ids_in_the_access_log(gunicorn, tmp_path):
    server = gunicorn(workers=2)
    assert get(f"{server.url}/livez")[0] == 200
    assert get(f"{server.url}/readyz")[0] == 200
    status, headers, _ = get(f"{server.url}/api/items/3", {"X-Request-ID": "served-3"})
    assert status == 200
    assert headers["X-Request-ID"] == "served-3"
    server.stop()

    log_lines = (tmp_path / "logs" / "service.log").read_text().splitlines()
    records = [ecs_record(line) for line in log_lines]  # every line is one ECS JSON object
    served = [record for record in records if record.get("http.request.id") == "served-3"]
    assert {record["log.logger"] for record in served} == {
        "{{ cookiecutter.package_name }}.views",
        "gunicorn.access",
    }


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc (Linux)")
def test_only_the_master_has_the_log_file_open(gunicorn, tmp_path):
    server = gunicorn(workers=2)
    for item_id in range(20):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    log_file = (tmp_path / "logs" / "service.log").resolve()
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text()
    workers = [int(pid) for pid in children.split()]
    assert log_file in open_files(master)

    def workers_holding_the_file() -> list[int]:
        return [pid for pid in workers if log_file in open_files(pid)]

    # A worker gunicorn has only just forked still holds what it inherited, until post_fork.
    wait_until(lambda: not workers_holding_the_file(), "no worker holding the log file")
    server.stop()

    writers = {record["process.pid"] for record in ecs_records(log_file.read_text())}
    assert set(workers) <= writers, "the workers' lines reach the file through the master"


def open_files(pid: int) -> set[Path]:
    return {Path(os.readlink(fd)) for fd in Path(f"/proc/{pid}/fd").iterdir() if fd.is_symlink()}


def test_a_temporary_folder_too_deep_for_a_socket_address_does_not_stop_it(gunicorn, tmp_path):
    # Linux gives a Unix socket's address 108 bytes; macOS's TMPDIR alone takes about 50.
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 5)
    deep.mkdir(parents=True)
    server = gunicorn(workers=1, TMPDIR=str(deep))
    assert get(f"{server.url}/api/items/1")[0] == 200
    server.stop()
    records = ecs_records((tmp_path / "logs" / "service.log").read_text())
    assert "/api/items/1" in {record.get("url.path") for record in records}  # relayed


def test_a_worker_leaves_what_it_loaded_out_of_full_garbage_collections(gunicorn):
    server = gunicorn(workers=1, app=gc_app.APP)
    status, _, body = get(f"{server.url}/gc")
    assert status == 200
    counts = json.loads(body)
    # The modules and the app, tens of thousands of objects, against what serving has made.
    assert counts["frozen"] > counts["tracked"]


def test_the_development_server_serves_too(start_service):
    command = [sys.executable, "-m", "{{ cookiecutter.package_name }}"]
    server = start_service(command, LOG_FORMAT="text")
    assert get(f"{server.url}/livez")[0] == 200
    status, headers, _ = get(f"{server.url}/api/items/4")
    assert status == 200
    assert len(headers["X-Request-ID"]) == 32


def test_a_bad_setting_stops_gunicorn_with_one_line(tmp_path):
    result = gunicorn_start_refused(LOG_LEVEL="LOUD", TMPDIR=str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "invalid setting LOG_LEVEL='LOUD'" in result.stderr
    assert list(tmp_path.iterdir()) == [], "the refused start leaves nothing behind"
