"""Syslog shipping (observability/log_syslog.py) against a receiver on a loopback port:
RFC 5424 messages framed by octet counting, over TLS too, a buffer that holds lines while
the receiver is away and counts what overflows, a receiver that stalls, resets or comes
back, a stop that waits only while lines move, and bad settings refused in one line."""

import fcntl
import itertools
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import termios
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from loguru import logger

from {{ cookiecutter.package_name }}.observability import log_syslog
from {{ cookiecutter.package_name }}.observability.log_syslog import (
    SyslogSender,
    retry_waits,
    syslog_frame,
    tls_context,
)
from {{ cookiecutter.package_name }}.observability.logging import (
    configure_logging,
)
from {{ cookiecutter.package_name }}.settings import (
    SERVICE_NAME,
    Settings,
    SettingsError,
    host_and_port,
    load_settings,
)

from .conftest import get, gunicorn_start_refused, make_settings, wait_until
from .ecs import ecs_record

# RFC 5424 section 6: <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)",
    re.DOTALL,
)
USER_FACILITY = 1
SEVERITY = {"critical": 2, "error": 3, "warning": 4, "success": 5, "info": 6, "debug": 7}


class SyslogReceiver:
    """Takes octet-counted syslog messages (RFC 6587 section 3.4.1) on a loopback port,
    optionally over TLS; `restart` drops every connection, as a restarting receiver does,
    and `pause` stops reading, as a stuck one does."""

    def __init__(
        self, tls: ssl.SSLContext | None = None, port: int = 0, vacant: socket.socket | None = None
    ) -> None:
        self.messages: list[bytes] = []
        self.framing_errors: list[bytes] = []
        self.accepted = 0
        self.closed = 0  # connections the sender ended
        self._tls = tls
        self._arrived = threading.Condition()
        self._reading = threading.Event()
        self._reading.set()
        self._connections: list[socket.socket] = []
        self._listen(vacant, port)
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 15.0) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def wait_until_closed(self, count: int, timeout: float = 15.0) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: self.closed >= count, timeout)

    def pause(self) -> None:
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def unread_bytes(self) -> int:
        """What has arrived and waits to be read, as a paused receiver lets it pile up."""
        unread = 0
        for connection in list(self._connections):
            with suppress(OSError):
                count = fcntl.ioctl(connection.fileno(), termios.FIONREAD, b"\0" * 4)
                unread += struct.unpack("i", count)[0]
        return unread

    def stop(self, reset: bool = False) -> None:
        """With `reset`, the connections end with a TCP reset, as a receiver that crashed
        ends them, once their reading threads have ended."""
        closed = self.closed + len(self._connections)
        for sock in [self._listener, *self._connections]:
            if reset and sock is not self._listener:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with suppress(OSError):  # not connected any more
                # Wakes the thread blocked on it; reading alone, so that nothing is sent.
                sock.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
            sock.close()
        self._connections.clear()
        self._reading.set()
        if reset:  # the reset leaves once no thread uses the socket
            assert self.wait_until_closed(closed)

    def restart(self, reset: bool = False) -> None:
        self.stop(reset)
        self._listen(port=self.port)

    def _listen(self, vacant: socket.socket | None = None, port: int = 0) -> None:
        """Listens on `vacant`, a port the test held until now, or else binds `port`."""
        if vacant is None:
            vacant = reusable_socket()
            vacant.bind(("127.0.0.1", port))
        self._listener = vacant
        # A small receive buffer, which the connections inherit: while the receiver is
        # paused, a sender soon has more in flight than the kernel holds for it.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self._listener.listen()
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
                if self._tls is not None:
                    connection = self._tls.wrap_socket(connection, server_side=True)
            except ssl.SSLError:
                continue  # a client that does not trust us: it tries again
            except OSError:
                return  # stopped
            self.accepted += 1
            self._connections.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        received = bytearray()
        while self._reading.wait() and (chunk := self._receive(connection)):
            received += chunk
            while (frame := self._next_frame(received)) is not None:
                with self._arrived:
                    self.messages.append(frame)
                    self._arrived.notify_all()
                self._took(frame)
        with self._arrived:
            self.closed += 1
            self._arrived.notify_all()

    def _took(self, message: bytes) -> None:
        """What the receiver does after each message: a slower one takes its time here."""

    @staticmethod
    def _receive(connection: socket.socket) -> bytes:
        try:
            return connection.recv(1024 * 1024)
        except OSError:
            return b""

    def _next_frame(self, received: bytearray) -> bytes | None:
        """The first whole message, taken out of `received`."""
        space = received.find(b" ", 0, 12)
        if space == -1 and len(received) < 12:
            return None
        length = bytes(received[:space])
        if not length.isdigit():
            self.framing_errors.append(bytes(received[:80]))
            received.clear()
            return None
        end = space + 1 + int(length)
        if len(received) < end:
            return None
        message = bytes(received[space + 1 : end])
        del received[:end]
        return message


@pytest.fixture
def receiver():
    started = SyslogReceiver()
    yield started
    started.stop()


@pytest.fixture
def vacant_port():
    """A loopback port where nobody listens yet: bound, so that no free port that another
    process asks for is this one before a receiver listens on it, and not listened on, so that
    connecting to it is refused."""
    with reusable_socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held


def reusable_socket() -> socket.socket:
    """A socket that may bind its port again while connections it accepted linger."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def parse(message: bytes) -> dict:
    header = HEADER.fullmatch(message)
    assert header, f"not an RFC 5424 message: {message[:120]!r}"
    return {**header.groupdict(), "record": ecs_record(header["msg"].decode())}


def test_each_line_is_an_octet_counted_rfc_5424_message_with_the_json_as_msg(receiver):
    configure_logging(make_settings(log_syslog_address=receiver.address))
    logger.info("two\nlines in one message")  # the framing keeps it one message
    logger.warning("é, and a \u2028 line separator")
    logger.error("failed")
    assert receiver.wait_for(3)

    messages = [parse(message) for message in receiver.messages]
    assert receiver.framing_errors == []
    assert [m["record"]["message"] for m in messages] == [
        "two\nlines in one message",
        "é, and a \u2028 line separator",
        "failed",
    ]
    for m in messages:
        severity = SEVERITY[m["record"]["log.level"]]
        assert int(m["pri"]) == USER_FACILITY * 8 + severity
        assert m["time"].endswith(b"Z")
        assert datetime.fromisoformat(m["time"].decode()).tzinfo is not None
        assert m["host"].decode() == socket.gethostname()
        assert m["app"].decode() == SERVICE_NAME[:48]  # the longest APP-NAME RFC 5424 allows
        assert m["procid"] == str(os.getpid()).encode()
        assert (m["msgid"], m["sd"]) == (b"-", b"-")


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, and its key, made with the openssl tool."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "receiver.pem", tmp_path / "receiver.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_receiver(cert, key) -> SyslogReceiver:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return SyslogReceiver(tls=context)


def trusting_settings(receiver: SyslogReceiver, ca_file: Path) -> Settings:
    """Settings that send the lines over TLS to `receiver`, whose certificate `ca_file` signs."""
    return make_settings(
        log_syslog_address=receiver.address, log_syslog_tls=True, log_syslog_ca_file=ca_file
    )


def test_lines_go_over_tls_to_a_receiver_whose_certificate_the_ca_file_trusts(certificate):
    receiver = tls_receiver(*certificate)
    try:
        configure_logging(trusting_settings(receiver, ca_file=certificate[0]))
        logger.info("over TLS")
        assert receiver.wait_for(1)
        assert parse(receiver.messages[0])["record"]["message"] == "over TLS"
    finally:
        receiver.stop()


def test_lines_logged_one_after_another_over_tls_share_one_connection(certificate):
    receiver = tls_receiver(*certificate)
    try:
        configure_logging(trusting_settings(receiver, ca_file=certificate[0]))
        for number in range(3):
            logger.info("over TLS {}", number)
            assert receiver.wait_for(number + 1)
        # The receiver's TLS housekeeping (session tickets) makes the connection readable:
        # that is not the receiver closing it.
        assert receiver.accepted == 1
    finally:
        receiver.stop()


def test_a_receiver_whose_certificate_is_not_trusted_gets_nothing_and_stderr_says_why(
    certificate, capsys
):
    receiver = tls_receiver(*certificate)
    try:
        settings = make_settings(log_syslog_address=receiver.address, log_syslog_tls=True)
        configure_logging(settings)  # the system's CAs: they do not know this certificate
        logger.info("kept back")
        errors = wait_for_stderr(capsys, "certificate verify failed")
        assert f"cannot reach syslog at {receiver.address}" in errors
        assert receiver.messages == []
    finally:
        receiver.stop()


def wait_for_stderr(capsys, text: str, timeout: float = 15.0) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        seen += capsys.readouterr().err
        time.sleep(0.02)
    assert text in seen, seen
    return seen


def test_a_receiver_that_never_answers_the_tls_handshake_is_given_up_and_told(monkeypatch, capsys):
    monkeypatch.setattr(log_syslog, "CONNECT_TIMEOUT_SECONDS", 0.5)
    silent = socket.socket()  # the kernel accepts connections to it; nobody answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        configure_logging(make_settings(log_syslog_address=address, log_syslog_tls=True))
        errors = wait_for_stderr(capsys, f"cannot reach syslog at {address}")
        [notice] = [line for line in errors.splitlines() if "cannot reach syslog" in line]
        assert notice.endswith("timed out")
    finally:
        silent.close()


def test_lines_wait_while_the_receiver_is_away_and_what_overflows_is_counted_and_told(
    vacant_port, capsys
):
    port = vacant_port.getsockname()[1]
    counted = []
    settings = make_settings(
        log_syslog_address=f"127.0.0.1:{port}", log_syslog_buffer_bytes=64 * 1024
    )
    configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
    for number in range(600):  # about 150 KB of messages: more than the buffer holds
        logger.info("line {} {}", number, "x" * 100)
    dropped = sum(lines for _, _, lines in counted)
    assert {(sink, reason) for sink, reason, _ in counted} == {("syslog", "buffer_full")}
    assert 0 < dropped < 600

    receiver = SyslogReceiver(vacant=vacant_port)
    try:
        assert receiver.wait_for(600 - dropped)
        numbers = [int(parse(m)["record"]["message"].split()[1]) for m in receiver.messages]
        assert numbers == list(range(600 - dropped)), "the oldest lines are kept, in order"
        logger.info("after")  # the buffer has room again: the episode ends with it
        assert receiver.wait_for(600 - dropped + 1)
        errors = wait_for_stderr(capsys, f"sending to syslog again, {dropped} lines were dropped")
        assert errors.count("dropping lines to syslog") == 1
        assert f"at 127.0.0.1:{port}: a buffer of {64 * 1024} bytes is full" in errors
        assert errors.count(f"cannot reach syslog at 127.0.0.1:{port}") == 1

        logger.info("later")  # the episode is over: a line sent now has nothing to tell
        assert receiver.wait_for(600 - dropped + 2)
        receiver.stop()
        logger.info("held")  # a new episode: the receiver is gone, and the sink stops
        errors += wait_for_stderr(capsys, f"cannot reach syslog at 127.0.0.1:{port}")
        logger.remove()  # writes out the notices
        errors += capsys.readouterr().err
        assert errors.count("sending to syslog again") == 1
        assert counted[-1] == ("syslog", "stopped", 1)
    finally:
        receiver.stop()


def test_a_restarted_receiver_gets_the_lines_logged_after_it_closed_the_connection(receiver):
    configure_logging(make_settings(log_syslog_address=receiver.address))
    for number in range(10):
        logger.info("before {}", number)
    assert receiver.wait_for(10)
    receiver.restart()
    for number in range(10):
        logger.info("after {}", number)
    assert receiver.wait_for(20)
    messages = [parse(m)["record"]["message"] for m in receiver.messages]
    assert messages == [f"before {n}" for n in range(10)] + [f"after {n}" for n in range(10)]


def test_a_receiver_that_resets_the_connection_gets_the_next_lines_over_a_new_one(receiver):
    configure_logging(make_settings(log_syslog_address=receiver.address))
    logger.info("before")
    assert receiver.wait_for(1)
    receiver.restart(reset=True)  # as a receiver that crashed, or a firewall, does
    logger.info("after")
    assert receiver.wait_for(2)
    assert [parse(m)["record"]["message"] for m in receiver.messages] == ["before", "after"]


def test_a_receiver_away_for_a_while_gets_the_lines_logged_meanwhile(receiver, monkeypatch, capsys):
    monkeypatch.setattr(log_syslog, "LAST_RETRY_SECONDS", 0.05)
    configure_logging(make_settings(log_syslog_address=receiver.address))
    logger.info("before")
    assert receiver.wait_for(1)
    receiver.stop()
    logger.info("while away")
    wait_for_stderr(capsys, f"cannot reach syslog at {receiver.address}")
    back = SyslogReceiver(port=receiver.port)
    try:
        assert back.wait_for(1)
        assert [parse(m)["record"]["message"] for m in back.messages] == ["while away"]
        wait_for_stderr(capsys, f"syslog at {receiver.address} reached again")
    finally:
        back.stop()


def test_stopping_ends_the_sending_thread_even_while_it_waits_to_try_again(
    vacant_port, monkeypatch, capsys
):
    monkeypatch.setattr(log_syslog, "FIRST_RETRY_SECONDS", 3600)  # the next attempt: in an hour
    others = set(threading.enumerate())
    port = vacant_port.getsockname()[1]
    configure_logging(make_settings(log_syslog_address=f"127.0.0.1:{port}"))
    wait_for_stderr(capsys, f"cannot reach syslog at 127.0.0.1:{port}")
    # Named, as py-spy and faulthandler show it.
    [sending] = [t for t in threading.enumerate() if t not in others and t.name == "log-syslog"]
    logger.remove()
    sending.join(60)
    assert not sending.is_alive()


def test_a_sender_made_with_its_defaults_sends_and_stops(receiver):
    sink = logger.add(SyslogSender(receiver.address), format="{message}")  # no notices
    logger.info("plain")
    assert receiver.wait_for(1)
    logger.remove(sink)
    assert receiver.wait_until_closed(1)
    assert HEADER.fullmatch(receiver.messages[0])["msg"] == b"plain"


def test_reconfiguring_as_on_hup_loses_no_line_and_sends_none_twice(receiver):
    settings = make_settings(log_syslog_address=receiver.address)
    configure_logging(settings)
    for number in range(300):
        logger.info("first {}", number)
    configure_logging(settings)  # a new sender; the old one sends what it still holds
    logger.info("second")
    assert receiver.wait_for(301)
    messages = [parse(m)["record"]["message"] for m in receiver.messages]
    assert messages == [f"first {n}" for n in range(300)] + ["second"]


BIG = 8 * 1024 * 1024  # more than the kernel holds in flight for a paused receiver


def hold_a_large_line_in_flight(receiver: SyslogReceiver) -> str:
    """Log a line larger than the socket buffers to a paused receiver: the sender's thread
    stays in the middle of sending it, and the lines logged next wait in its buffer."""
    message = "large " + "x" * BIG
    logger.info(message)
    wait_until(lambda: receiver.unread_bytes() > 0, "the sender to take a line", 15)
    return message


def ten_lines_waiting_behind_a_stall(receiver: SyslogReceiver) -> tuple[list, str]:
    """The sink counting its losses, the receiver paused with a large line in flight, and the
    lines "waiting 0" to "waiting 9" in the buffer: the losses counted, and the line in flight."""
    counted: list = []
    settings = make_settings(log_syslog_address=receiver.address, log_syslog_buffer_bytes=2 * BIG)
    configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
    receiver.pause()
    in_flight = hold_a_large_line_in_flight(receiver)
    for number in range(10):
        logger.info("waiting {}", number)
    return counted, in_flight


def remove_sinks(meanwhile=lambda: None) -> None:
    """logger.remove(), which stops the sinks, run while `meanwhile` runs; a stop that
    never returns fails the test instead of hanging it."""
    removing = threading.Thread(target=logger.remove, daemon=True)
    removing.start()
    meanwhile()
    removing.join(60)
    assert not removing.is_alive(), "stopping the syslog sink did not return"


def test_stopping_gives_up_on_a_receiver_that_takes_nothing_and_counts_what_waited(
    receiver, monkeypatch, capsys
):
    monkeypatch.setattr(log_syslog, "STOP_WAIT_SECONDS", 3600)  # the receiver's stall ends it
    counted, in_flight = ten_lines_waiting_behind_a_stall(receiver)
    remove_sinks()
    assert counted == [("syslog", "stopped", 10)]
    assert (
        f"logging: dropping lines to syslog at {receiver.address}: "
        "the sink stopped before sending them\n"
    ) in capsys.readouterr().err, "told by the time the sink has stopped"

    receiver.resume()  # the line in flight goes on, and the thread ends after it
    assert receiver.wait_until_closed(1), "the sender's connection stayed open"
    assert [parse(m)["record"]["message"] for m in receiver.messages] == [in_flight]


class OnceRestingReceiver(SyslogReceiver):
    """Rests `seconds` after its first message: slow to take lines, never stuck."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.resting = threading.Event()
        self._rested = False

    def _took(self, message: bytes) -> None:
        if not self._rested:
            self._rested = True
            self.resting.set()
            time.sleep(self.seconds)
            self.resting.clear()


# These tests take capsys: the console then writes to memory, and drops none of their lines.
def test_stopping_waits_while_a_slow_receiver_keeps_taking_lines(monkeypatch, capsys):
    # The receiver takes the first large line 0.9 s after the sink starts to stop, and the
    # second one 0.9 s after that: each within the 1.5 s that stop() gives it to move, the two
    # together not. Only a wait that starts again at each line sees both through.
    monkeypatch.setattr(log_syslog, "STOP_WAIT_SECONDS", 3600)
    monkeypatch.setattr(log_syslog, "STUCK_AFTER_SECONDS", 1.5)
    receiver = OnceRestingReceiver(0.9)
    try:
        counted: list = []
        settings = make_settings(
            log_syslog_address=receiver.address, log_syslog_buffer_bytes=2 * BIG
        )
        configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
        receiver.pause()
        hold_a_large_line_in_flight(receiver)
        logger.info("second " + "x" * BIG)  # waits in the buffer: larger than the kernel holds

        def resume_a_while_later():
            time.sleep(receiver.seconds)
            receiver.resume()

        remove_sinks(meanwhile=resume_a_while_later)
        # The second line, larger than the socket buffers, cannot have been sent before the
        # receiver's rest after the first one ended.
        assert not receiver.resting.is_set(), "stop() gave up on a receiver taking lines"
        assert receiver.wait_for(2)
        assert counted == []
    finally:
        receiver.stop()


def test_stopping_waits_while_the_receiver_takes_what_is_buffered(receiver, monkeypatch, capsys):
    # Neither bound ends this wait: only the receiver taking everything does.
    monkeypatch.setattr(log_syslog, "STOP_WAIT_SECONDS", 3600)
    monkeypatch.setattr(log_syslog, "STUCK_AFTER_SECONDS", 3600)
    counted, in_flight = ten_lines_waiting_behind_a_stall(receiver)
    remove_sinks(meanwhile=receiver.resume)  # the receiver takes lines again as the sink stops
    assert counted == []
    assert receiver.wait_for(11)
    messages = [parse(m)["record"]["message"] for m in receiver.messages]
    assert messages == [in_flight] + [f"waiting {number}" for number in range(10)]


def test_stopping_returns_as_soon_as_everything_is_sent_and_reaching_again_is_told(
    vacant_port, monkeypatch, capsys
):
    monkeypatch.setattr(log_syslog, "STOP_WAIT_SECONDS", 3600)
    monkeypatch.setattr(log_syslog, "STUCK_AFTER_SECONDS", 3600)
    # Attempts close together, so that several fail before the receiver comes.
    monkeypatch.setattr(log_syslog, "FIRST_RETRY_SECONDS", 0.001)
    monkeypatch.setattr(log_syslog, "LAST_RETRY_SECONDS", 0.05)
    port = vacant_port.getsockname()[1]
    counted = []
    settings = make_settings(log_syslog_address=f"127.0.0.1:{port}")
    configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
    for number in range(10):
        logger.info("held {}", number)
    errors = wait_for_stderr(capsys, f"cannot reach syslog at 127.0.0.1:{port}")
    receiver = SyslogReceiver(vacant=vacant_port)
    try:
        assert receiver.wait_for(10)
        receiver.restart()  # reached at once again: nothing to tell
        logger.info("after a restart")
        assert receiver.wait_for(11)
        remove_sinks()  # nothing left to wait for: it returns without waiting
        errors += capsys.readouterr().err
        assert errors.count(f"syslog at 127.0.0.1:{port} reached again") == 1
        assert "sending to syslog again" not in errors, "no line was dropped"
        assert counted == []
    finally:
        receiver.stop()


def test_the_buffer_holds_exactly_its_capacity_before_and_after_a_batch(
    receiver, vacant_port, monkeypatch, capsys
):
    monkeypatch.setattr(log_syslog, "LAST_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(log_syslog, "STOP_WAIT_SECONDS", 3600)
    monkeypatch.setattr(log_syslog, "STUCK_AFTER_SECONDS", 3600)
    pad = "p" * 1000
    configure_logging(make_settings(log_syslog_address=receiver.address))
    logger.info("line {:05d} {}", 0, pad)
    assert receiver.wait_for(1)
    # Every line "line NNNNN <pad>" makes a frame of this length.
    frame = len(b"%d %b" % (len(receiver.messages[0]), receiver.messages[0]))
    lines = -(-BIG // frame)  # as many as make one batch larger than the kernel holds
    port = vacant_port.getsockname()[1]
    counted = []
    settings = make_settings(
        log_syslog_address=f"127.0.0.1:{port}", log_syslog_buffer_bytes=lines * frame
    )
    configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
    for number in range(lines + 1):  # the buffer exactly full, then one line more
        logger.info("line {:05d} {}", number, pad)
    assert counted == [("syslog", "buffer_full", 1)]

    late = SyslogReceiver(vacant=vacant_port)
    late.pause()
    try:
        # The whole buffer goes in one batch that stays in flight: the buffer is empty again.
        wait_until(lambda: late.unread_bytes() > 0, "a batch in flight", 15)
        for number in range(lines + 1, 2 * lines + 2):
            logger.info("line {:05d} {}", number, pad)
        assert counted == [("syslog", "buffer_full", 1)] * 2
        late.resume()
        assert late.wait_for(2 * lines)
        numbers = [int(parse(m)["record"]["message"].split()[1]) for m in late.messages]
        assert numbers == [*range(lines), *range(lines + 1, 2 * lines + 1)]
        remove_sinks()  # everything was sent: stopping waits for nothing
    finally:
        late.stop()


@pytest.mark.parametrize("over", ["tcp", "tls"])
def test_a_receiver_that_stops_reading_costs_the_line_in_flight_counted_and_told(
    over, request, monkeypatch, capsys
):
    monkeypatch.setattr(log_syslog, "SEND_TIMEOUT_SECONDS", 1.0)
    if over == "tls":
        cert, key = request.getfixturevalue("certificate")
        receiver = tls_receiver(cert, key)
        tls = {"log_syslog_tls": True, "log_syslog_ca_file": cert}
    else:
        receiver, tls = SyslogReceiver(), {}
    try:
        counted = []
        settings = make_settings(
            log_syslog_address=receiver.address, log_syslog_buffer_bytes=2 * BIG, **tls
        )
        configure_logging(settings, count_lost_lines=lambda *loss: counted.append(loss))
        logger.info("first")  # over TLS, the receiver's session tickets have come by now
        assert receiver.wait_for(1)
        receiver.pause()
        hold_a_large_line_in_flight(receiver)
        failed = f"dropping lines to syslog at {receiver.address}: the connection failed: "
        [notice] = [line for line in wait_for_stderr(capsys, failed).splitlines() if failed in line]
        assert notice.endswith("timed out")
        assert counted == [("syslog", "send_error", 1)]
        receiver.resume()
        logger.info("after")  # over a new connection
        assert receiver.wait_for(2)
        assert [parse(m)["record"]["message"] for m in receiver.messages] == ["first", "after"]
        wait_for_stderr(capsys, "sending to syslog again, 1 lines were dropped")
    finally:
        receiver.stop()


def test_stopping_while_the_receiver_is_unreachable_counts_what_it_held(vacant_port, capsys):
    port = vacant_port.getsockname()[1]
    counted = []
    configure_logging(
        make_settings(log_syslog_address=f"127.0.0.1:{port}"),
        count_lost_lines=lambda *loss: counted.append(loss),
    )
    for number in range(5):
        logger.info("held {}", number)
    wait_for_stderr(capsys, f"cannot reach syslog at 127.0.0.1:{port}")
    logger.remove()  # without waiting for a receiver that is not there
    assert counted == [("syslog", "stopped", 5)]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOG_SYSLOG_ADDRESS", "logs.example.com"),
        ("LOG_SYSLOG_ADDRESS", "logs.example.com:0"),
        ("LOG_SYSLOG_ADDRESS", "logs.example.com:syslog"),
        ("LOG_SYSLOG_ADDRESS", ":514"),
        ("LOG_SYSLOG_TLS", "maybe"),
        ("LOG_SYSLOG_CA_FILE", "/nonexistent/ca.pem"),
        ("LOG_SYSLOG_BUFFER_BYTES", "1000"),
    ],
)
def test_a_bad_syslog_setting_is_named_in_one_line(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert f"{variable}={value!r}" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("address", ["logs.example.com:6514", "[::1]:514", "10.0.0.7:601"])
def test_documented_address_forms_are_accepted(monkeypatch, address):
    monkeypatch.setenv("LOG_SYSLOG_ADDRESS", address)
    assert load_settings().log_syslog_address == address


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("logs.example.com:6514", "logs.example.com", 6514),
        ("[::1]:514", "::1", 514),  # an IPv6 address is written in brackets
        ("[2001:db8::7]:601", "2001:db8::7", 601),
        (" 10.0.0.7:1 ", "10.0.0.7", 1),  # the lowest port
        ("10.0.0.7:65535", "10.0.0.7", 65535),  # the highest
    ],
)
def test_an_address_gives_the_host_and_port_the_sender_connects_to(address, host, port):
    assert host_and_port(address) == (host, port)


def test_a_port_above_65535_is_refused_with_the_forms_to_use(monkeypatch):
    monkeypatch.setenv("LOG_SYSLOG_ADDRESS", "logs.example.com:65536")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "invalid setting LOG_SYSLOG_ADDRESS='logs.example.com:65536': Value error, "
        'expected host:port ("logs.example.com:6514", "[::1]:514")'
    )


def test_a_receiver_on_the_ipv6_loopback_gets_the_lines():
    listener = socket.socket(socket.AF_INET6)
    try:
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    listener.listen()
    try:
        configure_logging(make_settings(log_syslog_address=f"[::1]:{listener.getsockname()[1]}"))
        logger.info("over IPv6")
        listener.settimeout(15)
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(15)
            received = b""
            while b"over IPv6" not in received and (chunk := connection.recv(65536)):
                received += chunk
        assert b"over IPv6" in received
    finally:
        listener.close()


def a_record(when: datetime, level: int = 20) -> dict:
    """What syslog_frame reads of a loguru record."""
    return {"time": when, "level": SimpleNamespace(no=level)}


def test_attempts_to_reach_the_receiver_wait_twice_as_long_each_time_up_to_5_seconds():
    waits = list(itertools.islice(retry_waits(), 9))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_frame_counts_its_octets_and_ends_with_the_line_without_its_newline():
    frame = syslog_frame('{"message": "été"}\n', a_record(datetime.now(UTC)), "host")
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)  # bytes, not characters
    assert message.endswith(' {"message": "été"}'.encode())


def test_the_timestamp_is_utc_whatever_the_local_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "JST-9")  # UTC+9 as a POSIX rule: needs no time zone data
    time.tzset()
    try:
        local = datetime(2026, 1, 2, 12, 4, 5, 678901).astimezone()  # as loguru stamps a record
        header = parse_header(syslog_frame("{}\n", a_record(local), "host"))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert header["time"] == b"2026-01-02T03:04:05.678901Z"


def parse_header(frame: bytes) -> dict:
    header = HEADER.fullmatch(frame.partition(b" ")[2])
    assert header, frame[:200]
    return header.groupdict()


def test_header_fields_keep_printable_ascii_and_the_lengths_rfc_5424_allows(monkeypatch):
    monkeypatch.setattr(log_syslog, "SERVICE_NAME", "s" * 60)  # a long project name
    when = a_record(datetime.now(UTC))
    assert parse_header(syslog_frame("{}", when, "h" * 300))["host"] == b"h" * 255
    assert parse_header(syslog_frame("{}", when, "h"))["app"] == b"s" * 48
    # "!" and "~" are the first and last printable characters; a space or DEL is none.
    assert parse_header(syslog_frame("{}", when, "!web 01~\x7f"))["host"] == b"!web01~"
    assert parse_header(syslog_frame("{}", when, " \t"))["host"] == b"-"  # nothing left


def test_a_ca_file_that_holds_no_certificate_is_named_in_one_line(tmp_path):
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate\n")
    with pytest.raises(SettingsError) as error:
        tls_context(not_a_ca)
    assert str(error.value).startswith(f"invalid setting LOG_SYSLOG_CA_FILE='{not_a_ca}': ")
    assert "\n" not in str(error.value)


def test_a_ca_file_that_holds_no_certificate_stops_gunicorn_with_one_line(tmp_path):
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate\n")
    result = gunicorn_start_refused(
        LOG_SYSLOG_ADDRESS="127.0.0.1:6514",
        LOG_SYSLOG_TLS="true",
        LOG_SYSLOG_CA_FILE=str(not_a_ca),
        LOG_FILE="",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "invalid setting" in line]
    assert f"invalid setting LOG_SYSLOG_CA_FILE='{not_a_ca}': " in line


def test_under_gunicorn_the_master_sends_one_access_line_per_request(gunicorn, receiver):
    server = gunicorn(workers=3, LOG_SYSLOG_ADDRESS=receiver.address)
    for item_id in range(30):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    assert get(f"{server.url}/api/fail")[0] == 500  # an error line, and a warning for a 5xx
    master = str(server.process.pid).encode()

    def access_lines() -> list[dict]:
        records = [parse(message) for message in receiver.messages]
        assert {m["procid"] for m in records} == {master}, "the master alone sends"
        for m in records:  # the level of a worker's line crosses the relay
            assert int(m["pri"]) == USER_FACILITY * 8 + SEVERITY[m["record"]["log.level"]]
        access = [m["record"] for m in records if m["record"]["log.logger"] == "gunicorn.access"]
        return [record for record in access if record["url.path"].startswith("/api/items/")]

    deadline = time.monotonic() + 15
    while len(access_lines()) < 30 and time.monotonic() < deadline:
        receiver.wait_for(len(receiver.messages) + 1, timeout=0.5)
    paths = sorted(record["url.path"] for record in access_lines())
    assert paths == sorted(f"/api/items/{item_id}" for item_id in range(30))
