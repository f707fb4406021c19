"""Log lines shipped to a syslog receiver over TCP, optionally over TLS.

Each line is an RFC 5424 message whose MSG is the line's JSON, framed by octet counting
(RFC 6587 section 3.4.1: the message's length in bytes, a space, the message), so that a
newline inside a line cannot split it; with LOG_SYSLOG_TLS the connection is TLS (RFC 5425).
rsyslog and syslog-ng take it as it is; a hosted service that wants a token in each
message's structured data (Loggly) takes it through a local rsyslog that adds one.

Under gunicorn the master writes it, with the other sinks (see log_relay.py), and the
network is never in a caller's way: `write` only puts the message in a buffer of
`capacity` bytes, and a thread of its own connects, sends and reconnects, waiting longer
after each failed attempt. While the receiver is down or restarting, messages wait in the
buffer; what does not fit is dropped, counted (`count_lost_lines`) and told on stderr.

What TCP allows: the sender learns that the receiver went away only after the fact, so the
messages it handed the kernel meanwhile (in the send buffer, in flight, or received but not
yet read by the receiver) can be lost. Syslog has no acknowledgements, so no sender can
know which they were: sending them again could duplicate them. This one never sends a
message twice; before each batch it checks whether the receiver has closed its end, and
reconnects first if so, which narrows the window to the moment of the restart itself.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import SERVICE_NAME, SettingsError, host_and_port
from .log_sinks import BackgroundWriter, CountLostLines, count_nothing

if TYPE_CHECKING:  # loguru's types exist for type checkers only
    from loguru import Message, Record

FACILITY_USER = 1
# Syslog severities by the lowest loguru level number they take (CRITICAL is 50).
SEVERITIES = [(50, 2), (40, 3), (30, 4), (25, 5), (20, 6), (0, 7)]
NILVALUE = "-"
NEWLINE = "\n"  # ends a rendered line; the framing makes it needless
CONNECT_TIMEOUT_SECONDS = 5.0
SEND_TIMEOUT_SECONDS = 10.0
FIRST_RETRY_SECONDS = 0.1
LAST_RETRY_SECONDS = 5.0
# How long stop() (on HUP, at exit) waits for a connected receiver to take what is buffered,
# at most, and while it takes nothing: the workers' lines wait meanwhile.
STOP_WAIT_SECONDS = 2.0
STUCK_AFTER_SECONDS = 0.5


def syslog_frame(line: str, record: Record, hostname: str) -> bytes:
    """One RFC 5424 message, octet-counted: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`."""
    severity = next(code for lowest, code in SEVERITIES if record["level"].no >= lowest)
    timestamp = record["time"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = " ".join(
        [
            f"<{FACILITY_USER * 8 + severity}>1",
            timestamp,
            _header_field(hostname, 255),
            _header_field(SERVICE_NAME, 48),
            str(os.getpid()),  # the writer: under gunicorn, the master
            NILVALUE,  # MSGID
            NILVALUE,  # STRUCTURED-DATA: the JSON carries every field
        ]
    )
    message = f"{header} {line.removesuffix(NEWLINE)}".encode()
    return b"%d %b" % (len(message), message)


def retry_waits() -> Iterator[float]:
    """The waits before each new attempt to reach the receiver: doubling, up to a cap."""
    wait = FIRST_RETRY_SECONDS
    while True:
        yield wait
        wait = min(2 * wait, LAST_RETRY_SECONDS)


def _header_field(value: str, longest: int) -> str:
    """Header fields are printable US-ASCII without spaces (RFC 5424 section 6)."""
    printable = "".join(char for char in value if "!" <= char <= "~")[:longest]
    return printable or NILVALUE


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifies the receiver's certificate and name, against `ca_file` or the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        raise SettingsError(
            f"invalid setting LOG_SYSLOG_CA_FILE={str(ca_file)!r}: {error}"
        ) from None


class SyslogSender:
    """A loguru sink that buffers messages for a thread that sends them to `address`."""

    def __init__(
        self,
        address: str,
        tls: ssl.SSLContext | None = None,
        capacity: int = 8 * 1024 * 1024,
        count_lost_lines: CountLostLines = count_nothing,
        notices: BackgroundWriter | None = None,
    ) -> None:
        self._address = address
        self._host, self._port = host_and_port(address)
        self._tls = tls
        self._capacity = capacity
        self._count_lost_lines = count_lost_lines
        self._notices = notices
        self._hostname = socket.gethostname()
        self._changed = threading.Condition()
        self._pending: deque[bytes] = deque()
        self._pending_size = 0
        self._unsent = 0  # pending, plus the batch being sent
        self._sent = 0
        self._dropped = 0  # since lines started being lost, until sending works again
        self._unreachable = False
        self._stopping = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._send_forever, name="log-syslog", daemon=True)
        self._thread.start()

    def write(self, message: Message) -> None:
        if os.getpid() != self._pid:
            # A gunicorn worker before post_fork: the sending thread stayed in the master.
            return
        frame = syslog_frame(message, message.record, self._hostname)
        with self._changed:
            if self._pending_size + len(frame) > self._capacity:
                self._drop(1, "buffer_full", f"a buffer of {self._capacity} bytes is full")
                return
            self._pending.append(frame)
            self._pending_size += len(frame)
            self._unsent += 1
            self._changed.notify_all()

    def stop(self) -> None:
        """Send what is buffered while the receiver takes it, for STOP_WAIT_SECONDS at most;
        what is left then, or at once when the receiver is unreachable, is counted as lost.
        A batch being sent goes on in the thread, which ends after it."""
        if os.getpid() != self._pid:
            return  # the master's thread and buffer are the master's to finish
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while self._unsent and not self._unreachable and time.monotonic() < deadline:
                moved = partial(self._moved_since, self._sent)
                if not self._changed.wait_for(moved, STUCK_AFTER_SECONDS):
                    break  # the receiver takes nothing
            if self._pending:
                self._drop(len(self._pending), "stopped", "the sink stopped before sending them")
                self._unsent -= len(self._pending)
                self._pending.clear()
        if self._notices is not None:
            self._notices.stop()

    def _moved_since(self, sent: int) -> bool:
        return self._sent != sent or not self._unsent

    def _send_forever(self) -> None:
        waits = retry_waits()
        while not self._stopping:
            connection = self._connect()
            if connection is None:
                wait = next(waits)
                with self._changed:
                    self._changed.wait_for(lambda: self._stopping, wait)
                continue
            waits = retry_waits()
            with connection:
                self._send_while_connected(connection)

    def _connect(self) -> socket.socket | None:
        connection = None
        try:
            connection = socket.create_connection(
                (self._host, self._port), timeout=CONNECT_TIMEOUT_SECONDS
            )
            if self._tls is not None:  # the handshake, with the timeout above
                connection = self._tls.wrap_socket(connection, server_hostname=self._host)
        except OSError as error:  # refused, timed out, or a certificate not trusted
            if connection is not None:
                connection.close()
            if not self._unreachable:
                self._unreachable = True
                self._notify(
                    f"cannot reach syslog at {self._address}, lines wait in a buffer of "
                    f"{self._capacity} bytes: {error}"
                )
            return None
        connection.settimeout(SEND_TIMEOUT_SECONDS)
        if self._unreachable:
            self._unreachable = False
            self._notify(f"syslog at {self._address} reached again")
        return connection

    def _send_while_connected(self, connection: socket.socket) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopping)
                if not self._pending:
                    return  # stopping, and everything sent
            if _closed_by_peer(connection):
                return  # a restarting receiver: reconnect before sending more
            with self._changed:
                batch, lines = b"".join(self._pending), len(self._pending)
                self._pending.clear()
                self._pending_size = 0
            try:
                connection.sendall(batch)
                error = None
            except OSError as failure:
                error = failure
            with self._changed:
                if error is not None:
                    # Part of the batch may have arrived; sending it again could repeat it.
                    self._drop(lines, "send_error", f"the connection failed: {error}")
                elif self._dropped and not self._pending:
                    self._notify(f"sending to syslog again, {self._dropped} lines were dropped")
                    self._dropped = 0
                self._unsent -= lines
                self._sent += lines
                self._changed.notify_all()
            if error is not None:
                return

    def _drop(self, lines: int, reason: str, why: str) -> None:
        if not self._dropped:
            self._notify(f"dropping lines to syslog at {self._address}: {why}")
        self._dropped += lines
        self._count_lost_lines("syslog", reason, lines)

    def _notify(self, text: str) -> None:
        if self._notices is not None:
            self._notices.write(f"logging: {text}\n")


def _closed_by_peer(connection: socket.socket) -> bool:
    """A syslog receiver sends nothing: its end of the connection readable means it closed
    it (or TLS housekeeping, which reading consumes)."""
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    if not poller.poll(0):
        return False
    connection.settimeout(0)
    try:
        return connection.recv(1) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True
    finally:
        connection.settimeout(SEND_TIMEOUT_SECONDS)
