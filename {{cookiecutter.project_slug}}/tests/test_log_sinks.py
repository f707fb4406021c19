"""A stuck console reader or a full disk costs log lines, counted and told, never a request."""

import json
import os
import select
import threading
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from loguru import logger

from {{ cookiecutter.package_name }}.observability import log_sinks
from {{ cookiecutter.package_name }}.observability.log_sinks import (
    ROOM_TO_RESUME_BYTES,
    BackgroundWriter,
    line_record,
    local_now,
)
from {{ cookiecutter.package_name }}.observability.logging import (
    configure_logging,
    write_rendered,
)

from .conftest import from_forked_child, make_settings
from .ecs import ecs_records

LINE = "x" * 99 + "\n"


def read_until(read_end: int, text: str, timeout: float = 10.0) -> str:
    """What a reader that came back finds in the pipe, up to the first `text`."""
    received = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in received and time.monotonic() < deadline:
        if select.select([read_end], [], [], deadline - time.monotonic())[0]:
            received += os.read(read_end, 1024 * 1024)
    return received.decode()


def fill(write_end: int) -> None:
    """Fill a pipe, as its reader would have let it fill before getting stuck."""
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"." * 4096)
    except BlockingIOError:
        os.set_blocking(write_end, True)


def test_a_console_nobody_reads_holds_up_no_caller():
    read_end, write_end = os.pipe()
    fill(write_end)
    # stdout and stderr both go to the pipe nobody reads, as they often do in a container.
    stdout, stderr = os.fdopen(write_end, "w"), os.fdopen(os.dup(write_end), "w")
    counted = []
    console = BackgroundWriter(
        stdout, "console", capacity=100 * len(LINE),
        count_lost_lines=lambda *loss: counted.append(loss),
        notices=BackgroundWriter(stderr, "stderr"),
    )  # fmt: skip
    durations = []

    def log_lines():
        for _ in range(2000):
            started = time.monotonic()
            console.write(LINE)
            durations.append(time.monotonic() - started)

    writing = threading.Thread(target=log_lines, daemon=True)
    writing.start()
    writing.join(timeout=10)
    assert not writing.is_alive(), "a line waited for the reader"
    print(f"slowest of 2000 writes while stuck: {max(durations) * 1000:.2f} ms")
    assert counted, "no line was dropped"
    assert set(counted) == {("console", "buffer_full", 1)}
    started = time.monotonic()
    console.stop()
    assert time.monotonic() - started < 1.0, "stop waited for a stuck reader"

    output = read_until(read_end, "writing console again")
    assert output.count("logging: dropping lines to console") == 1
    assert f"writing console again, {len(counted)} lines were dropped" in output
    assert output.count(LINE) == 2000 - len(counted)


def test_a_full_disk_loses_lines_says_so_once_and_writing_resumes(tmp_path, capsys):
    log_file = tmp_path / "service.log"
    log_file.symlink_to("/dev/full")  # every write fails with ENOSPC
    counted = []
    # No rotation: a daily one would rotate the old /dev/full away at once, and compress it.
    settings = make_settings(log_file=log_file, log_rotation="1 GB", log_compression="none")
    configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
    for number in range(50):
        logger.info("lost {}", number)
    log_file.unlink()  # space again: the next line opens a fresh file
    logger.info("kept")
    logger.remove()  # closes the file and writes out the notices

    assert counted == [("file", "no_space", 1)] * 50
    errors = capsys.readouterr().err
    assert "Logging error" not in errors
    assert errors.count("cannot write") == 1
    assert f"writing {log_file} again, 50 lines were lost" in errors
    records = ecs_records(log_file.read_text())
    assert [record["message"] for record in records] == [
        "log file writable again, 50 lines were lost (no_space)",
        "kept",
    ]
    assert records[0]["log.lines_lost"] == 50


def test_the_line_that_says_the_file_works_again_is_a_plain_warning(tmp_path, capsys):
    log_file = tmp_path / "service.log"
    log_file.symlink_to("/dev/full")
    configure_logging(make_settings(log_file=log_file, log_rotation="1 GB", log_compression="none"))
    for number in range(3):
        logger.info("lost {}", number)
    log_file.unlink()
    # The line that comes next has a request id and an exception: the notice takes neither.
    try:
        raise ValueError("bad input")
    except ValueError:
        logger.bind(request_id="req-7", trace_id="trace-7").exception("kept")
    logger.remove()

    resumed, kept = ecs_records(log_file.read_text())
    static = ("ecs.version", "service.name", "service.environment", "event.dataset")
    for field in ("@timestamp", "process.pid", *static):
        del resumed[field]
    assert resumed == {
        "log.level": "warning",
        "message": "log file writable again, 3 lines were lost (no_space)",
        "log.logger": log_sinks.__name__,
        "log.lines_lost": 3,
    }
    assert kept["error.type"] == "ValueError"


def test_a_write_error_other_than_a_full_disk_is_told_once_and_counted(
    tmp_path, capsys, monkeypatch
):
    # The log file is a named pipe whose reader goes away: each write fails with EPIPE.
    log_file = tmp_path / "service.log"
    os.mkfifo(log_file)
    reader = os.open(log_file, os.O_RDONLY | os.O_NONBLOCK)
    counted = []
    settings = make_settings(log_file=log_file, log_rotation="1 GB", log_compression="none")
    configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
    os.close(reader)
    # A disk with no room left: only a full disk waits for room before trying again.
    full = SimpleNamespace(f_bavail=0, f_frsize=4096)
    monkeypatch.setattr(log_sinks.os, "statvfs", lambda folder: full)
    for number in range(5):
        logger.info("lost {}", number)
    log_file.unlink()  # a plain file again: writing resumes at once, with no room to wait for
    logger.info("kept")
    logger.remove()

    assert counted == [("file", "write_error", 1)] * 5
    errors = capsys.readouterr().err
    assert errors.count("cannot write") == 1
    messages = [record["message"] for record in ecs_records(log_file.read_text())]
    assert messages == ["log file writable again, 5 lines were lost (write_error)", "kept"]


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (b"one\ntwo\n", b"one\ntwo\n"),
        (b"one\ntwo\ntw", b"one\ntwo\n"),
        (b"one\n" + b"p" * (100 * 1024), b"one\n"),  # the newline is in an earlier chunk
        (b"one\n" + b"p" * (64 * 1024), b"one\n"),
        (b"\n" + b"p" * (64 * 1024), b"\n"),  # the last newline is the file's first byte
        (LINE.encode() * 3000 + b"p" * (100 * 1024), LINE.encode() * 3000),  # far from the start
        (b"p" * (70 * 1024), b""),
        (b"", b""),
    ],
    ids=[
        "whole",
        "short",
        "longer-than-a-chunk",
        "a-chunk",
        "first-byte",
        "far",
        "no-newline",
        "empty",
    ],
)
def test_a_line_cut_short_by_a_crash_is_taken_out_at_the_last_newline(tmp_path, content, kept):
    log_file = tmp_path / "service.log"
    log_file.write_bytes(content)
    # Private: what LogFile runs before it reopens the file; reaching it through a failing
    # disk would leave the partial line to chance.
    log_sinks._cut_partial_last_line(log_file)
    assert log_file.read_bytes() == kept


def test_a_full_disk_is_tried_again_from_a_quarter_megabyte_free(monkeypatch, tmp_path):
    def free(blocks):
        stats = SimpleNamespace(f_bavail=blocks, f_frsize=4096)
        monkeypatch.setattr(log_sinks.os, "statvfs", lambda folder: stats)

    free(ROOM_TO_RESUME_BYTES // 4096)
    assert log_sinks._has_room(tmp_path)
    free(ROOM_TO_RESUME_BYTES // 4096 - 1)
    assert not log_sinks._has_room(tmp_path)

    def unknown(folder):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(log_sinks.os, "statvfs", unknown)
    assert log_sinks._has_room(tmp_path), "when the free space is unknown, the next write tells"


class HeldStream:
    """A stream whose reader holds the first write until released."""

    def __init__(self):
        self.written = []
        self.writing = threading.Event()
        self.released = threading.Event()

    def write(self, text):
        self.writing.set()
        assert self.released.wait(10)
        self.written.append(text)

    def flush(self):
        pass


def write_one_by_one(console):
    console.write("x" * 4)
    console.write("x" * 6)  # exactly the capacity, together: kept
    console.write("y")  # one more character: dropped


def write_together(console):
    # Each line is kept or dropped on its own: the y's do not fit, the last x's do.
    console.write_lines(["x" * 4, "y" * 7, "x" * 6])


@pytest.mark.parametrize("write", [write_one_by_one, write_together])
def test_the_console_buffer_keeps_exactly_its_capacity_and_drops_beyond_it(write):
    stream = HeldStream()
    counted = []
    console = BackgroundWriter(
        stream, "console", capacity=10, count_lost_lines=lambda *loss: counted.append(loss)
    )
    console.write("first\n")
    assert stream.writing.wait(10)  # the thread holds "first": the buffer is empty again
    write(console)
    stream.released.set()
    console.stop()
    assert "".join(stream.written) == "first\n" + "x" * 10
    assert counted == [("console", "buffer_full", 1)]


def test_lines_sent_together_and_lost_to_a_full_disk_are_each_counted(tmp_path, capsys):
    log_file = tmp_path / "service.log"
    log_file.symlink_to("/dev/full")
    counted = []
    settings = make_settings(log_file=log_file, log_rotation="1 GB", log_compression="none")
    configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
    request = [("INFO", [(["file"], f"line {number}\n")]) for number in range(3)]
    write_rendered(request)  # one datagram's records, as the log relay writes them
    log_file.unlink()
    write_rendered(request)
    logger.remove()

    assert counted == [("file", "no_space", 3)]
    assert f"writing {log_file} again, 3 lines were lost" in capsys.readouterr().err
    lines = log_file.read_text().splitlines()
    resumed = json.loads(lines[0])["message"]
    assert resumed == "log file writable again, 3 lines were lost (no_space)"
    assert lines[1:] == ["line 0", "line 1", "line 2"]


class SlowStream:
    """A reader that takes each write `seconds` after it was offered: slow, never stuck."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.written = []
        self.writing = threading.Event()

    def write(self, text):
        self.writing.set()
        time.sleep(self.seconds)
        self.written.append(text)

    def flush(self):
        pass


def test_stopping_waits_for_a_console_reader_that_is_slow_but_moving(monkeypatch):
    # Each write takes 60 % of the time stop() gives the reader to move, the two together
    # longer than that: only a wait that starts again at each write sees both through.
    monkeypatch.setattr(log_sinks, "STUCK_AFTER_SECONDS", 1.5)
    stream = SlowStream(0.9)
    console = BackgroundWriter(stream, "console")
    console.write("first\n")
    assert stream.writing.wait(10)  # "second" comes while "first" is written: its own batch
    console.write("second\n")
    console.stop()
    assert stream.written == ["first\n", "second\n"]


class GatheringWatched(threading.Event):
    """The writer's stop event, which tells when the writer starts gathering on it."""

    def __init__(self):
        super().__init__()
        self.gathering = threading.Event()

    def wait(self, timeout=None):
        self.gathering.set()
        return super().wait(timeout)


def test_lines_that_come_while_the_writer_gathers_go_in_one_write(monkeypatch):
    monkeypatch.setattr(log_sinks, "GATHER_SECONDS", 60)  # only stop() ends it in this test
    stream = SlowStream(0)
    console = BackgroundWriter(stream, "console")
    console._stopping = GatheringWatched()
    console.write("woke the writer\n")
    assert console._stopping.gathering.wait(10)
    console.write("came while it gathered\n")
    console.stop()
    assert stream.written == ["woke the writer\ncame while it gathered\n"]


@pytest.fixture
def zone_change(monkeypatch):
    """A clock at the start of a minute, which the test moves, and a way to change the
    machine's time zone (POSIX TZ rules: no zone database needed); both undone after."""
    clock = SimpleNamespace(now=1_800_000_000.0)
    monkeypatch.setattr(log_sinks, "time", SimpleNamespace(time=lambda: clock.now))
    monkeypatch.setattr(log_sinks, "_local_zone", log_sinks._local_zone)

    def set_zone(rule: str) -> None:
        monkeypatch.setenv("TZ", rule)
        time.tzset()

    yield clock, set_zone
    monkeypatch.undo()
    time.tzset()


def test_local_time_follows_a_change_of_zone_from_the_next_minute_on(zone_change):
    clock, set_zone = zone_change
    set_zone("UTC0")
    assert local_now().utcoffset() == timedelta(0)
    set_zone("NPT-5:45")  # Nepal: 5 hours 45 minutes ahead of UTC
    clock.now += 60
    stamped = local_now()
    assert stamped.timestamp() == clock.now
    assert stamped.utcoffset() == timedelta(hours=5, minutes=45)
    assert stamped.tzname() == "NPT"


def test_local_time_is_the_time_now_in_the_local_zone():
    before = datetime.now().astimezone()
    stamped = local_now()
    after = datetime.now().astimezone()
    rounding = timedelta(microseconds=1)  # now() and fromtimestamp() round differently
    assert before - rounding <= stamped <= after + rounding
    assert stamped.utcoffset() == after.utcoffset()


def test_a_forked_worker_stamps_its_lines_with_its_own_process_id():
    def process_named() -> str:
        return str(line_record(local_now(), "INFO", "-", {})["process"].id)

    worker, named = from_forked_child(process_named)
    assert int(named) == worker
