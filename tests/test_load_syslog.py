"""Syslog shipping to a real rsyslog: every access line arrives once, each an ECS JSON line,
and a receiver restarted mid-load loses at most what was in flight and duplicates nothing.

The lines are checked with the baked project's own checker of the ecs-logging rules
(its tests/ecs.py), which its tests apply to every line they read.
"""

import importlib.util
import json
import threading
import time
from collections import Counter

from .load import send_all
from .rsyslog import Rsyslog
from .service import GunicornService

PATHS = ["/api/items/{n}", "/", "/api/fail", "/api/items/{missing}"]
FINAL_REQUEST_ID = "last-request-of-the-test"


def mixed_paths(rounds: int) -> list[str]:
    return [path.format(n=n % 1000, missing=2000 + n) for n in range(rounds) for path in PATHS]


def ecs_checker(project):
    """The project's `ecs_record`: parses one JSON line, asserting that it follows the rules."""
    spec = importlib.util.spec_from_file_location("baked_ecs", project.path / "tests" / "ecs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ecs_record


def access_ids(rsyslog: Rsyslog, ecs_record, master_pid: int) -> Counter:
    """Request ids of the access lines rsyslog received, each line checked; the master sent all."""
    ids = Counter()
    for procid, message in rsyslog.lines():
        assert procid == str(master_pid), "only the master talks to the receiver"
        record = ecs_record(message)
        if record["log.logger"] == "gunicorn.access":
            ids[record["http.request.id"]] += 1
    return ids


def wait_for_request(rsyslog, ecs_record, service, request_id: str, timeout=60.0) -> Counter:
    """Until the access line of `request_id` has arrived: the sender keeps the order, so
    whatever was logged before it has arrived too, or was lost."""
    deadline = time.monotonic() + timeout
    while (ids := access_ids(rsyslog, ecs_record, service.process.pid))[request_id] == 0:
        assert time.monotonic() < deadline, f"{request_id} did not reach rsyslog in {timeout} s"
        time.sleep(0.05)
    return ids


def last_request(service) -> None:
    assert service.get("/api/items/1", headers={"X-Request-ID": FINAL_REQUEST_ID}).ok


def test_every_access_line_reaches_rsyslog_once_as_ecs_json(baked, tmp_path):
    project = baked("all-defaults")
    ecs_record = ecs_checker(project)
    with Rsyslog(tmp_path).start() as rsyslog:
        service = GunicornService(project, tmp_path, workers=3,
                                  LOG_SYSLOG_ADDRESS=rsyslog.address).start()  # fmt: skip
        outcomes = send_all(service.url, mixed_paths(300), concurrency=8)
        last_request(service)
        ids = wait_for_request(rsyslog, ecs_record, service, FINAL_REQUEST_ID)
        service.stop()

    sent = {outcome.request_id for outcome in outcomes}
    assert all(outcome.status is not None for outcome in outcomes)
    assert sent <= ids.keys()
    assert max(ids.values()) == 1, "no line twice"
    assert "dropping lines to syslog" not in service.output.read_text()


def test_rsyslog_restarted_mid_load_loses_at_most_the_lines_in_flight(baked, tmp_path):
    project = baked("all-defaults")
    ecs_record = ecs_checker(project)
    rsyslog = Rsyslog(tmp_path).start()
    service = GunicornService(project, tmp_path, workers=3,
                              LOG_SYSLOG_ADDRESS=rsyslog.address).start()  # fmt: skip
    paths = mixed_paths(500)
    outcomes = []
    load = threading.Thread(target=lambda: outcomes.extend(send_all(service.url, paths, 8)))
    load.start()
    deadline = time.monotonic() + 60
    while sum(access_ids(rsyslog, ecs_record, service.process.pid).values()) < len(paths) // 4:
        assert time.monotonic() < deadline and load.is_alive(), "no lines reached rsyslog"
        time.sleep(0.05)
    rsyslog.restart()  # mid-load: the sender is connected and sending
    load.join()
    last_request(service)
    ids = wait_for_request(rsyslog, ecs_record, service, FINAL_REQUEST_ID)
    service.stop()
    rsyslog.stop()

    sent = {outcome.request_id for outcome in outcomes}
    lost = sent - ids.keys()
    output = service.output.read_text()
    print(f"rsyslog restart: {len(lost)} of {len(sent)} access lines lost, "
          f"{sum(n - 1 for n in ids.values())} duplicated; stop took "
          f"{rsyslog.last_stop_seconds:.2f} s")  # fmt: skip
    assert all(outcome.status is not None for outcome in outcomes)
    assert max(ids.values()) == 1, "no line twice"
    assert "bytes is full" not in output, "the buffer held every line of the outage"
    # Lost can only be lines handed to the kernel before the sender saw the receiver go:
    # the lines of one moment, consecutive in the order the master wrote them (the order of
    # the log file), never lines of the outage that followed, which the buffer kept.
    written = [request_id for request_id in file_access_ids(service) if request_id in sent]
    lost_at = [position for position, request_id in enumerate(written) if request_id in lost]
    if lost:
        first = lost_at[0]
        assert lost_at == list(range(first, first + len(lost))), f"not one run: {lost_at}"
    assert len(lost) <= LOST_IN_FLIGHT_AT_MOST, sorted(lost)


# Measured on the development machine: 0, 0, 0, 0, 1, 3 and 14 lines lost in 7 runs of
# 2,000 requests; the lines the kernel held at that moment, a handful of batches at most.
LOST_IN_FLIGHT_AT_MOST = 100


def file_access_ids(service) -> list[str]:
    lines = (service.log_dir / "service.log").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [r["http.request.id"] for r in records if r["log.logger"] == "gunicorn.access"]


def test_rsyslog_down_slows_no_request_and_what_overflows_is_counted_in_metrics(baked, tmp_path):
    project = baked("all-defaults")
    ecs_record = ecs_checker(project)
    rsyslog = Rsyslog(tmp_path)  # its port is chosen; it starts later
    service = GunicornService(project, tmp_path, workers=3, LOG_SYSLOG_ADDRESS=rsyslog.address,
                              LOG_SYSLOG_BUFFER_BYTES="65536").start()  # fmt: skip
    outcomes = send_all(service.url, mixed_paths(150), concurrency=8)
    rsyslog.start()
    # Until the sender has reconnected and emptied its buffer: lines logged before then
    # would find it full still.
    deadline = time.monotonic() + 60
    while "sending to syslog again" not in service.output.read_text():
        assert time.monotonic() < deadline, "the sender did not reconnect"
        time.sleep(0.05)
    last_request(service)
    wait_for_request(rsyslog, ecs_record, service, FINAL_REQUEST_ID)
    # Read once the buffer has room again: the access line of this scrape is not dropped.
    dropped = service.metric("log_lines_dropped_total", sink="syslog", reason="buffer_full")
    service.stop()
    rsyslog.stop()

    assert all(outcome.status is not None for outcome in outcomes)
    assert dropped > 0, "600 requests' lines are more than 64 KB"
    # Every line the file has and rsyslog has not is a line counted as dropped, but for the
    # lines a new worker logs before it hands its lines to the master (see log_syslog.py).
    written = lines_until(service_log_lines(service), FINAL_REQUEST_ID)
    received = lines_until([message for _, message in rsyslog.lines()], FINAL_REQUEST_ID)
    missing = Counter(written) - Counter(received)
    assert not Counter(received) - Counter(written), "rsyslog got only lines of the file"
    booting = [line for line in missing if json.loads(line)["message"].startswith("Booting worker")]
    assert missing.total() - len(booting) == dropped
    output = service.output.read_text()
    assert output.count("dropping lines to syslog") == 1
    assert f"{int(dropped)} lines were dropped" in output


def service_log_lines(service) -> list[str]:
    return (service.log_dir / "service.log").read_text(encoding="utf-8").splitlines()


def lines_until(lines: list[str], request_id: str) -> list[str]:
    """The lines up to the access line of `request_id`, which comes after its other lines."""
    [end] = [number for number, line in enumerate(lines) if is_access_line(line, request_id)]
    return lines[: end + 1]


def is_access_line(line: str, request_id: str) -> bool:
    record = json.loads(line)
    return record.get("http.request.id") == request_id and record["log.logger"] == "gunicorn.access"
