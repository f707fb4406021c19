"""A stuck console reader or a full disk costs log lines, counted and told, never a request."""

import json
import os
import select
import threading
import time

from loguru import logger

from {{ cookiecutter.package_name }}.observability.log_sinks import (
    BackgroundWriter,
)
from {{ cookiecutter.package_name }}.observability.logging import (
    configure_logging,
)

from .conftest import make_settings

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
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [record["message"] for record in records] == [
        "log file writable again, 50 lines were lost (no_space)",
        "kept",
    ]
    assert records[0]["log.lines_lost"] == 50
