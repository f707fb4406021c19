"""Workers' log lines reach the master's sinks whole, and a killed worker blocks nobody."""

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from loguru import logger

from {{ cookiecutter.package_name }}.observability import log_relay
from {{ cookiecutter.package_name }}.observability.log_lines import (
    line_renderers,
)
from {{ cookiecutter.package_name }}.observability.log_relay import (
    HELD_CHARACTERS,
    MAX_DATAGRAM,
    SENT_AT,
    LogRelay,
    RelayingGunicornLogger,
    RelaySender,
    _fitted,
    _packed,
    _send,
    by_renderer,
    forward_logs_to_master,
    pack_lines,
    request_ended,
    request_started,
    send_records,
    sent_at_and_text,
    unpack_records,
)
from {{ cookiecutter.package_name }}.observability.log_sinks import (
    line_record,
)
from {{ cookiecutter.package_name }}.observability.logging import (
    configure_logging,
)

from .conftest import make_settings
from .ecs import ecs_records
from .test_logging import gunicorn_logger_writing_access_lines, ids_of_request


@pytest.fixture
def master(tmp_path):
    """A master as gunicorn.conf.py sets it up: its sinks, and the relay."""
    settings = make_settings(log_file=tmp_path / "service.log")
    configure_logging(settings)
    relay = LogRelay()
    yield settings, relay
    relay.stop()


def fork_worker(settings, relay, log) -> int:
    pid = os.fork()
    if pid == 0:  # the worker: log, then leave without running the parent's clean-up
        try:
            forward_logs_to_master(settings, relay.address)
            log()
        finally:
            os._exit(0)
    return pid


def wait_for_exit(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
        time.sleep(0.02)
    return False


def file_records(settings) -> list[dict]:
    logger.remove()  # flush and close the file
    return ecs_records(settings.log_file.read_text())


def numbered_lines(count: int):
    """What a worker logs: lines 0 to count - 1, each bound with the worker's pid."""

    def log_lines():
        for number in range(count):
            logger.bind(worker=os.getpid()).info("line {}", number)

    return log_lines


def line_numbers_by_worker(records: list[dict], workers: list[int]) -> dict[int, list[int]]:
    return {
        pid: [int(r["message"].split()[1]) for r in records if r.get("worker") == pid]
        for pid in workers
    }


def test_lines_from_several_workers_arrive_once_and_whole(master):
    settings, relay = master
    workers = [fork_worker(settings, relay, numbered_lines(300)) for _ in range(3)]
    assert all(wait_for_exit(pid) for pid in workers)
    relay.stop()

    records = [record for record in file_records(settings) if "worker" in record]
    assert len(records) == 900
    for numbers in line_numbers_by_worker(records, workers).values():
        assert numbers == list(range(300)), "each worker's lines arrive complete and in order"


def test_a_requests_lines_reach_both_sinks_whole_and_in_order(tmp_path, capfd):
    settings = make_settings(log_file=tmp_path / "service.log")
    configure_logging(settings)  # here: its console is then the stdout that capfd captures
    relay = LogRelay()

    def serve_a_request():
        # gunicorn.conf.py's pre_request and post_request hooks.
        request_started()
        for number in range(5):
            logger.info("request line {}", number)
        request_ended()

    worker = fork_worker(settings, relay, serve_a_request)
    assert wait_for_exit(worker)
    relay.stop()
    expected = [f"request line {number}" for number in range(5)]
    assert [record["message"] for record in file_records(settings)] == expected
    console = [record["message"] for record in ecs_records(capfd.readouterr().out)]
    assert [message for message in console if message.startswith("request")] == expected


class StalledConsole:
    """A console whose first write stalls until the test lets it finish."""

    def __init__(self):
        self.writing, self.finish = threading.Event(), threading.Event()
        self.written = False

    def write(self, line):
        self.writing.set()
        self.finish.wait(timeout=60)
        self.written = True


def test_a_worker_is_forked_only_between_two_lines_the_master_writes(monkeypatch):
    """A worker forked in the middle of a write would inherit the sink's lock (a file's
    buffer) taken, and hang when it closes the master's sinks."""
    console = StalledConsole()
    monkeypatch.setattr(sys, "stdout", console)  # no file descriptor: written as it is
    settings = make_settings()
    configure_logging(settings)
    relay = LogRelay()
    sender = fork_worker(settings, relay, lambda: logger.info("one line"))
    assert wait_for_exit(sender)
    assert console.writing.wait(timeout=60), "the relay never wrote the line"
    forking = threading.Event()
    os.register_at_fork(before=forking.set)  # runs before the hooks registered earlier
    threading.Thread(target=lambda: forking.wait(60) and console.finish.set()).start()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if console.written else 1)
    _, status = os.waitpid(pid, 0)
    relay.stop()
    assert os.waitstatus_to_exitcode(status) == 0, "the worker was forked in mid-write"


@contextlib.contextmanager
def writing_held(settings, relay):
    """The master busy between two writes (as on HUP) until the block ends: its thread can
    still read, but writes nothing."""
    held, release = threading.Event(), threading.Event()

    def hold(_settings):
        held.set()
        release.wait(timeout=60)

    holder = threading.Thread(target=relay.paused(hold), args=(settings,))
    holder.start()
    assert held.wait(timeout=60)
    try:
        yield
    finally:
        release.set()
        holder.join()


def test_a_worker_logs_on_while_the_master_is_busy_and_its_lines_wait_for_it(master):
    settings, relay = master
    go_on, told = os.pipe()
    # Forked first: a fork waits for the master's write in progress.
    worker = fork_worker(settings, relay, lambda: os.read(go_on, 1) and numbered_lines(50)())
    with writing_held(settings, relay):
        os.write(told, b"!")
        # Fifty datagrams: a socket that all workers shared would take ten, then block.
        assert wait_for_exit(worker), "the worker waited for the master to write"
    relay.stop()
    assert line_numbers_by_worker(file_records(settings), [worker]) == {worker: list(range(50))}


def test_what_a_worker_sent_before_it_was_killed_is_written(master, monkeypatch):
    monkeypatch.setattr(log_relay, "GATHER_SECONDS", 60)  # the relay reads again at stop()
    settings, relay = master

    def log_then_die():
        numbered_lines(20)()
        os.kill(os.getpid(), signal.SIGKILL)

    worker = fork_worker(settings, relay, log_then_die)
    assert wait_for_exit(worker)
    relay.stop()
    assert line_numbers_by_worker(file_records(settings), [worker]) == {worker: list(range(20))}


def test_lines_of_several_workers_read_at_once_are_written_in_the_order_they_were_sent(
    master, monkeypatch
):
    monkeypatch.setattr(log_relay, "GATHER_SECONDS", 60)  # one read, at stop(), takes all
    settings, relay = master
    connected, says_connected = os.pipe()
    go_on, told = os.pipe()

    def connect_then_log_when_told():
        os.write(says_connected, b"!")
        os.read(go_on, 1)
        logger.info("second")

    # The first worker to connect logs last: read in the order they connected, its line
    # would come first.
    late = fork_worker(settings, relay, connect_then_log_when_told)
    os.read(connected, 1)
    early = fork_worker(settings, relay, lambda: logger.info("first"))
    assert wait_for_exit(early)
    os.write(told, b"!")
    assert wait_for_exit(late)
    relay.stop()
    messages = [record["message"] for record in file_records(settings)]
    assert [m for m in messages if m in ("first", "second")] == ["first", "second"]


def test_a_worker_killed_while_logging_does_not_block_the_others(master):
    settings, relay = master

    def log_forever():
        while True:
            logger.info("busy " + "x" * 2000)

    busy = fork_worker(settings, relay, log_forever)
    time.sleep(0.3)
    os.kill(busy, signal.SIGKILL)
    os.waitpid(busy, 0)

    def log_a_hundred():
        for number in range(100):
            logger.info("after {}", number)

    survivor = fork_worker(settings, relay, log_a_hundred)
    assert wait_for_exit(survivor), "a worker blocked on logging after another one was killed"
    relay.stop()
    messages = [record["message"] for record in file_records(settings)]
    assert [m for m in messages if m.startswith("after")] == [f"after {n}" for n in range(100)]


def test_a_record_too_large_for_a_datagram_reaches_the_file_cut_short(master, capfd):
    settings, relay = master
    worker = fork_worker(
        settings, relay, lambda: logger.bind(size="huge").info("z" * (2 * MAX_DATAGRAM))
    )
    assert wait_for_exit(worker)
    relay.stop()
    [record] = [record for record in file_records(settings) if record.get("size") == "huge"]
    cut = 2 * MAX_DATAGRAM - record["message"].count("z")
    assert record["message"].endswith(f"[...{cut} characters cut by the log relay]")
    assert "log relay:" not in capfd.readouterr().err


def test_sinks_rebuilt_while_workers_log_lose_no_line_and_repeat_none(master):
    settings, relay = master
    workers = [fork_worker(settings, relay, numbered_lines(1000)) for _ in range(3)]
    reconfigure = relay.paused(configure_logging)  # what gunicorn.conf.py runs on HUP
    rebuilt = 0
    running = set(workers)
    deadline = time.monotonic() + 60
    try:
        while running:
            assert time.monotonic() < deadline, "the workers did not finish"
            reconfigure(settings)
            rebuilt += 1
            # A turn for the relay thread: back to back, the rebuilds could starve it.
            time.sleep(0.001)
            running -= {pid for pid in running if os.waitpid(pid, os.WNOHANG)[0] == pid}
    finally:
        for pid in running:  # blocked on a full socket, they would outlive the test
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    relay.stop()

    assert rebuilt > 1
    for numbers in line_numbers_by_worker(file_records(settings), workers).values():
        assert numbers == list(range(1000)), "each worker's lines arrive once and in order"


def test_a_record_just_under_the_datagram_limit_arrives_whole(master):
    settings, relay = master
    # Console and file share the rendered line: one copy, plus a few hundred bytes.
    length = MAX_DATAGRAM - 4000
    worker = fork_worker(settings, relay, lambda: logger.bind(size="large").info("y" * length))
    assert wait_for_exit(worker)
    relay.stop()
    [record] = [record for record in file_records(settings) if record.get("size") == "large"]
    assert record["message"] == "y" * length


def test_the_file_stays_json_when_the_console_is_text(tmp_path, capfd):
    settings = make_settings(log_file=tmp_path / "service.log", log_format="text")
    configure_logging(settings)
    relay = LogRelay()
    worker = fork_worker(settings, relay, lambda: logger.warning("rendered twice"))
    assert wait_for_exit(worker)
    relay.stop()

    [record] = [r for r in file_records(settings) if r["message"] == "rendered twice"]
    assert record["log.level"] == "warning"
    assert record["process.pid"] == worker  # rendered in the worker, written by the master
    [line] = [line for line in capfd.readouterr().out.splitlines() if "rendered twice" in line]
    assert " | WARNING  | " in line
    assert not line.startswith("{")


def test_a_text_line_too_large_for_a_datagram_is_cut_and_stays_one_line(tmp_path, capfd):
    settings = make_settings(log_file=tmp_path / "service.log", log_format="text")
    configure_logging(settings)
    relay = LogRelay()
    message = "w" * (2 * MAX_DATAGRAM)
    worker = fork_worker(settings, relay, lambda: logger.info(message))
    assert wait_for_exit(worker)
    relay.stop()

    [record] = [r for r in file_records(settings) if r["message"].startswith("www")]
    assert record["message"].endswith(" characters cut by the log relay]")
    [line] = [line for line in capfd.readouterr().out.splitlines() if "www" in line]
    prefix, kept = line[: line.index("w")], line[line.index("w") : line.rindex(" [...")]
    assert " | INFO     | " in prefix
    assert kept == "w" * len(kept)
    cut = len(message) - len(kept)  # the mark counts exactly what was cut
    assert line.endswith(f" [...{cut} characters cut by the log relay]")


def test_workers_leave_out_the_records_below_the_log_level(master):
    settings, relay = master  # the master writes from INFO up: whatever a worker sends
    worker_settings = settings.model_copy(update={"log_level": "WARNING"})

    def log_both():
        logger.info("below the level")
        log_access_line(RelayingGunicornLogger, "/below-the-level-too")
        logger.warning("at the level")

    worker = fork_worker(worker_settings, relay, log_both)
    assert wait_for_exit(worker)
    relay.stop()
    messages = [record["message"] for record in file_records(settings)]
    assert "at the level" in messages
    assert "below the level" not in messages
    assert not [message for message in messages if "/below-the-level-too" in message]


def log_access_line(logger_class, path: str) -> None:
    """What gunicorn logs once it has answered a request, in the middle of the request's
    hooks, as a worker does."""
    gunicorn_logger = gunicorn_logger_writing_access_lines(logger_class)
    response = SimpleNamespace(status="201 CREATED", sent=7, headers=[])
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "REMOTE_ADDR": "10.1.2.3",
               "HTTP_USER_AGENT": "probe\x1b[2J", **ids_of_request("req-relayed")}  # fmt: skip
    request_started()
    gunicorn_logger.access(response, None, environ, timedelta(microseconds=12_345))
    request_ended()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_workers_access_line_is_the_line_loguru_would_make(tmp_path, capfd, log_format):
    # A worker renders its access line without a loguru record: the same line all the same.
    settings = make_settings(log_file=tmp_path / "service.log", log_format=log_format)
    configure_logging(settings)
    relay = LogRelay()
    started = datetime.now(UTC) - timedelta(milliseconds=1)  # lines write whole milliseconds
    worker = fork_worker(settings, relay, lambda: log_access_line(RelayingGunicornLogger, "/w"))
    assert wait_for_exit(worker)
    relay.stop()
    log_access_line(RelayingGunicornLogger, "/w")  # in the master: through loguru
    relayed, logged = file_records(settings)[-2:]
    assert relayed["process.pid"] == worker
    times = [datetime.fromisoformat(record.pop("@timestamp")) for record in (relayed, logged)]
    assert started <= times[0] <= times[1] <= datetime.now(UTC)
    del relayed["process.pid"], logged["process.pid"]
    assert relayed == logged
    assert relayed["message"] == "POST /w 201 12.3ms"
    console = [line for line in capfd.readouterr().out.splitlines() if "POST /w " in line]
    assert len(console) == 2
    if log_format == "text":  # the same but for the time, which the line starts with
        assert datetime.fromisoformat(console[0][:23]).astimezone(UTC) == times[0]
        assert console[0][23:] == console[1][23:] != ""
        assert "probe" not in console[0]  # the user agent is a JSON field only


@pytest.mark.parametrize("over", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_a_record_at_the_datagram_limit_arrives_whole_and_one_byte_more_is_cut(capfd, over):
    # A console alone: the message is then in the datagram once, so one more character of
    # it is one more byte, and the record can be made exactly MAX_DATAGRAM (+ over) long.
    settings = make_settings()
    configure_logging(settings)
    relay = LogRelay()
    # The probe's message has as many digits in its length as the final one: the datagram
    # carries that length.
    probe = MAX_DATAGRAM // 2

    def log_sized_record():
        forward_logs_to_master(settings, relay.address)
        # Private, but the honest measure: the datagram the worker sends is what _packed makes.
        sizes = []
        renderers = by_renderer(line_renderers(settings))
        measure = logger.add(
            lambda message: sizes.append(len(_packed(message.record, renderers).encode()))
        )
        logger.bind(size="probe").info("y" * probe)
        logger.remove(measure)
        logger.bind(size="exact").info("y" * (probe + MAX_DATAGRAM - sizes[0] + over))

    pid = os.fork()
    if pid == 0:
        try:
            log_sized_record()
        finally:
            os._exit(0)
    assert wait_for_exit(pid)
    relay.stop()
    logger.remove()  # writes out the console
    output = capfd.readouterr()
    records = ecs_records(output.out)
    [record] = [r for r in records if r.get("size") == "exact"]
    assert "log relay:" not in output.err
    if over:
        assert record["message"].startswith("y" * 1000)
        assert record["message"].endswith(" characters cut by the log relay]")
    else:
        assert record["message"] == "y" * (len(record["message"]))
        assert len(record["message"]) > MAX_DATAGRAM - 1000


def sent_datagram(lines: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """What a worker sends for a record rendered as `lines`: the datagram's records (what
    follows the time it was sent), and its lines."""
    worker, master = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with worker, master:
        # Private, but the unit that decides what a datagram holds: no fork needed.
        each_alone = [([destination], line) for destination, line in lines.items()]
        _send(worker, _fitted(pack_lines("INFO", each_alone)))
        datagram = master.recv(2 * MAX_DATAGRAM)
    [(_, received)] = unpack_records(sent_at_and_text(datagram)[1])
    return datagram[SENT_AT.size :], by_destination(received)


def by_destination(lines: list[tuple[list[str], str]]) -> dict[str, str]:
    """A record's lines, as unpack_records gives them, by destination."""
    return {destination: line for destinations, line in lines for destination in destinations}


def console_messages(datagram: bytes) -> list[str]:
    """The message of each record in a datagram, from its JSON console line."""
    records = unpack_records(sent_at_and_text(datagram)[1])
    return [json.loads(by_destination(lines)["console"])["message"] for _, lines in records]


def test_a_line_that_console_and_file_share_crosses_once(tmp_path):
    settings = make_settings(log_file=tmp_path / "service.log")  # JSON on both
    record = line_record(datetime.now().astimezone(), "WARNING", "the same line for both", {})
    [(level, lines)] = unpack_records(_packed(record, by_renderer(line_renderers(settings))))
    [(destinations, line)] = lines
    assert (level, destinations) == ("WARNING", ["console", "file"])
    assert json.loads(line)["message"] == "the same line for both"


@contextlib.contextmanager
def worker_sender():
    """A worker's sender, loguru's only sink, and a function that returns the messages of
    each datagram it has sent since last asked. Sending is synchronous: what is not in the
    socket yet was not sent."""
    worker, master = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender = RelaySender(worker)
    logger.remove()
    send_records(sender, make_settings(log_level="DEBUG"))

    def sent() -> list[list[str]]:
        datagrams = []
        while True:
            try:
                datagram = master.recv(2 * MAX_DATAGRAM, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return datagrams
            datagrams.append(console_messages(datagram))

    try:
        yield sender, sent
    finally:
        logger.remove()
        worker.close()
        master.close()


def test_a_requests_lines_travel_together_when_it_ends_and_others_at_once():
    with worker_sender() as (sender, sent):
        logger.info("before the request")
        assert sent() == [["before the request"]]
        sender.request_started()
        logger.info("in the view")
        logger.debug("a detail")
        assert sent() == []
        logger.info("the access line")
        sender.request_ended()
        assert sent() == [["in the view", "a detail", "the access line"]]
        logger.info("between requests")
        assert sent() == [["between requests"]]


def test_a_workers_access_line_travels_with_the_lines_of_its_request(tmp_path, monkeypatch):
    monkeypatch.setattr(log_relay, "_forwarding", None)  # put back: this process is no worker
    address = str(tmp_path / "relay.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(address)
        listener.listen()
        forward_logs_to_master(make_settings(), address)
        master, _ = listener.accept()
    gunicorn_logger = gunicorn_logger_writing_access_lines(RelayingGunicornLogger)
    response = SimpleNamespace(status="200 OK", sent=2, headers=[])
    try:
        with master:
            request_started()
            logger.info("in the view")
            gunicorn_logger.access(response, None, {}, timedelta(0))
            with pytest.raises(BlockingIOError):
                master.recv(MAX_DATAGRAM, socket.MSG_DONTWAIT)
            request_ended()
            datagram = master.recv(2 * MAX_DATAGRAM, socket.MSG_DONTWAIT)
    finally:
        logger.remove()  # the relay's sink, whose master is gone now
    assert console_messages(datagram) == ["in the view", "- - 200 0.0ms"]


class SocketInterruptedOnce:
    """A worker's socket whose first send is interrupted by gunicorn's timeout signal, whose
    handler logs in the thread it stops: the thread that holds the sender's lock."""

    def __init__(self) -> None:
        self.interrupted = False
        self.messages: list[str] = []

    def sendmsg(self, buffers: list[bytes], *_flags: object) -> None:
        if not self.interrupted:
            self.interrupted = True
            logger.error("request timed out")
        self.messages += console_messages(b"".join(buffers))


def test_a_line_logged_by_a_signal_handler_while_lines_are_sent_is_sent_too():
    interrupted = SocketInterruptedOnce()
    logger.remove()
    send_records(RelaySender(interrupted), make_settings())
    # A deadlock would hang the test: the logging runs in a thread it can give up on.
    logging_thread = threading.Thread(target=logger.info, args=("between requests",), daemon=True)
    logging_thread.start()
    logging_thread.join(timeout=60)
    logger.remove()
    assert not logging_thread.is_alive(), "the sender's lock was taken again by its own thread"
    assert interrupted.messages == ["request timed out", "between requests"]


def test_a_warning_in_a_request_goes_at_once_with_the_lines_held_before_it():
    with worker_sender() as (sender, sent):
        sender.request_started()
        logger.info("held")
        logger.warning("trouble")
        assert sent() == [["held", "trouble"]]
        logger.info("after it")
        sender.request_ended()
        assert sent() == [["after it"]]


def test_a_request_that_logs_a_lot_sends_its_lines_as_it_goes():
    with worker_sender() as (sender, sent):
        sender.request_started()
        # A record's datagram is its message and about 300 characters more.
        message = "m" * (HELD_CHARACTERS // 3)
        logger.info(message)
        logger.info(message)
        assert sent() == []
        logger.info(message)
        assert sent() == [[message] * 3]
        sender.request_ended()
        assert sent() == []


def test_held_lines_too_large_for_one_datagram_go_one_record_each_cut_to_fit():
    with worker_sender() as (sender, sent):
        sender.request_started()
        logger.info("small")
        logger.info("z" * (2 * MAX_DATAGRAM))
        [[small], [cut]] = sent()
        assert small == "small"
        assert cut.startswith("zzz")
        assert cut.endswith(" characters cut by the log relay]")


def test_threads_serving_requests_side_by_side_hold_lines_until_one_ends():
    # gunicorn's threaded workers: any request's end sends what is held.
    with worker_sender() as (sender, sent):
        sender.request_started()
        sender.request_started()
        logger.info("first")
        sender.request_ended()
        assert sent() == [["first"]]
        logger.info("second")
        assert sent() == []
        sender.request_ended()
        assert sent() == [["second"]]
        logger.info("none in progress")
        assert sent() == [["none in progress"]]


TEXT_PREFIX = "2026-01-02 03:04:05.678 | INFO     | - | my_service - "


@pytest.mark.parametrize(
    "console",
    [
        TEXT_PREFIX + "padded to a column   \n",
        TEXT_PREFIX + "over the limit: MAX\n",
        # Two lines in the record: each may keep a quarter of a datagram, exactly this.
        "w" * (MAX_DATAGRAM // 4) + "\n",
    ],
    ids=["trailing-spaces", "trailing-letter", "exactly-its-share"],
)
def test_a_line_that_fits_is_left_as_it_is_when_another_line_of_the_record_is_cut(console):
    file = json.dumps({"message": "kept", "payload": "p" * (2 * MAX_DATAGRAM)}) + "\n"
    datagram, lines = sent_datagram({"console": console, "file": file})
    assert len(datagram) <= MAX_DATAGRAM
    assert lines["console"] == console
    assert json.loads(lines["file"])["payload"].endswith(" characters cut by the log relay]")


def test_values_that_escaping_makes_larger_are_cut_until_they_fit_and_fill_half_of_it():
    # A control character is one character of a value, but six in a JSON line (\u0001):
    # the first cut, made in characters of the values, is too large, and the relay cuts
    # further, but keeps more than half a datagram.
    value = "\x01\x01e" * 17_000
    fields = {"message": value, **{f"field.{n}": value for n in range(20)}}
    datagram, lines = sent_datagram({"console": "short\n", "file": json.dumps(fields) + "\n"})
    assert MAX_DATAGRAM // 2 < len(datagram) <= MAX_DATAGRAM
    for kept_and_mark in json.loads(lines["file"]).values():
        kept, mark = kept_and_mark.split(" [...")
        assert value.startswith(kept)
        assert mark == f"{len(value) - len(kept)} characters cut by the log relay]"
    assert lines["console"] == "short\n"
