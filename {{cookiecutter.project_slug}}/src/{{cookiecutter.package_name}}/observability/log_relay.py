"""Carry log lines from gunicorn workers to the master, which alone writes them.

The master owns the sinks, so the log file has one writer: rotation, retention and
compression happen once and no line is interleaved. Each worker renders its lines and
sends them as datagrams on a Unix socket of its own (SOCK_SEQPACKET, connected to the
master's). A datagram arrives whole or not at all, and no lock is shared between
processes: a worker killed in the middle of logging (SIGKILL, the OOM killer) cannot block
the others, as a queue shared across processes would, whose lock dies held with the worker.
What it had sent stays in the kernel until the master has read it.

A record is packed as a header line, the JSON array [level, [[destinations, length], ...]],
then each distinct line once, as rendered (console and file often share the JSON line):
the lines are not escaped a second time, and the master only slices and writes them.

A datagram holds one record or several. The lines a worker logs while it serves a request
travel together when the request ends (see RelaySender): one send for the request's line
and its access line, instead of one each. A line at WARNING or above goes at once, with the
lines held before it.

The master reads every worker's socket at most once per GATHER_SECONDS: under load one wake,
and one write to each sink, for the requests of all workers in that time. Each connection
holds what its worker sends meanwhile, up to the socket's buffer (about 200 KB), where one
socket shared by all workers would hold 10 datagrams (net.unix.max_dgram_qlen) and then make
them wait. A datagram carries the time it was sent, and the master writes what it read in
that order, across workers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import shutil
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING

import orjson
from loguru import logger

from ..settings import Settings
from .log_adapters import GunicornLogger
from .log_lines import json_text, line_renderers
from .log_sinks import Render, RenderedLines, line_record, local_now
from .logging import observe_records, write_rendered
from .private_sockets import private_socket_address
from .server_hooks import at_master_exit

if TYPE_CHECKING:  # loguru's types exist for type checkers only
    from loguru import Record

# The largest datagram a default Linux socket buffer takes whole, with room to spare.
MAX_DATAGRAM = 200 * 1024
# What comes before the records in a datagram: when it was sent (time.monotonic_ns).
SENT_AT = struct.Struct("=Q")
# How long the master lets lines come in after it has read: see the docstring above.
GATHER_SECONDS = 0.01
CUT_MARK = " [...{} characters cut by the log relay]"
# A request's lines wait for its end until they make this many characters: a request that
# logs a lot sends them as it goes, and a worker holds little.
HELD_CHARACTERS = 16 * 1024


class LogRelay:
    """The master's end: a socket the workers connect to, and a thread that writes what
    they send to the sinks."""

    def __init__(self) -> None:
        address = private_socket_address("log-relay-", "relay.sock")
        self._folder = address.parent
        self.address = str(address)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind(self.address)
        self._listener.listen(socket.SOMAXCONN)
        self._listener.setblocking(False)
        self._workers: list[socket.socket] = []
        self._arrivals = selectors.DefaultSelector()
        self._arrivals.register(self._listener, selectors.EVENT_READ)
        self._buffer = bytearray(SENT_AT.size + MAX_DATAGRAM)
        self._stopping = threading.Event()
        self._writing = threading.Lock()
        # A worker forked while this thread writes a line would inherit the file's buffer
        # locked, and hang at its first touch of it: a fork waits for the line to be written,
        # as loguru makes it wait for its own writers.
        os.register_at_fork(
            before=self._writing.acquire,
            after_in_parent=self._writing.release,
            after_in_child=self._writing.release,
        )
        self._thread = threading.Thread(target=self._write_lines, name="log-relay", daemon=True)
        self._thread.start()
        at_master_exit(self.stop)  # a start refused for a bad setting, too

    def _write_lines(self) -> None:
        while not self._stopping.is_set():
            self._arrivals.select()
            self._write_arrived()
            self._stopping.wait(GATHER_SECONDS)  # stop() writes what is left at once
        self._write_arrived()

    def _write_arrived(self) -> None:
        """Write what every worker has sent, in the order they sent it."""
        self._accept_workers()
        datagrams = [datagram for worker in self._workers[:] for datagram in self._read(worker)]
        if not datagrams:
            return
        datagrams.sort(key=itemgetter(0))
        records = [record for _, text in datagrams for record in unpack_records(text)]
        with self._writing:
            write_rendered(records)

    def _accept_workers(self) -> None:
        while True:
            try:
                worker, _ = self._listener.accept()
            except BlockingIOError:
                return
            worker.setblocking(False)
            self._workers.append(worker)
            self._arrivals.register(worker, selectors.EVENT_READ)

    def _read(self, worker: socket.socket) -> list[tuple[int, str]]:
        """The datagrams waiting in a worker's socket, each with the time it was sent; the
        socket is closed once its worker has exited and everything it sent is read."""
        datagrams: list[tuple[int, str]] = []
        while True:
            try:
                size = worker.recv_into(self._buffer)
            except BlockingIOError:
                return datagrams
            if size == 0:  # a worker sends no empty datagram: this is its exit
                self._arrivals.unregister(worker)
                self._workers.remove(worker)
                worker.close()
                return datagrams
            datagrams.append(sent_at_and_text(memoryview(self._buffer)[:size]))

    def paused(self, configure: Callable[[Settings], None]) -> Callable[[Settings], None]:
        """`configure`, run between two relayed lines: the sinks it swaps (on HUP) then miss
        none and write none twice, and lines sent meanwhile wait in the sockets."""

        def configure_paused(settings: Settings) -> None:
            with self._writing:
                configure(settings)

        return configure_paused

    def stop(self) -> None:
        """Write everything already sent, then close: the workers have exited by now."""
        if self._listener.fileno() == -1:
            return  # already stopped
        self._stopping.set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as waker:
            waker.connect(self.address)  # ends the thread's wait for a worker's line
        self._thread.join(timeout=10)
        for worker in self._workers:
            worker.close()
        self._arrivals.close()
        self._listener.close()
        shutil.rmtree(self._folder, ignore_errors=True)


@functools.cache
def start_log_relay() -> LogRelay:
    """In the master; gunicorn re-runs its configuration on HUP, and the relay stays."""
    return LogRelay()


class RelaySender:
    """A worker's end: it sends each record to the master at once, but holds the lines of a
    request in progress and sends them together when it ends.

    A line at WARNING or above, or HELD_CHARACTERS of lines, sends what is held at once.
    gunicorn reports a request's end even when the worker timeout aborts it. So the lines
    that are held and then lost are at most the INFO and DEBUG lines of the request that a
    worker was serving when it was killed outright (SIGKILL, the OOM killer).
    """

    def __init__(self, sender: socket.socket) -> None:
        self._sender = sender
        self._held: list[str] = []
        self._held_characters = 0
        self._requests = 0  # in progress: several, with gunicorn's threaded workers
        # Re-entrant: gunicorn's timeout signal can strike while a line is being held, and
        # its handler logs the timeout in that same thread.
        self._lock = threading.RLock()

    def hold(self, packed: str, level: int) -> None:
        """A record that _packed has made, at `level` (a number)."""
        with self._lock:
            self._held.append(packed)
            self._held_characters += len(packed)
            if (
                not self._requests
                or self._held_characters >= HELD_CHARACTERS
                or level >= logging.WARNING
            ):
                self._send_held()

    def request_started(self) -> None:
        with self._lock:
            self._requests += 1

    def request_ended(self) -> None:
        with self._lock:
            self._requests = max(0, self._requests - 1)
            self._send_held()

    def _send_held(self) -> None:
        held, self._held, self._held_characters = self._held, [], 0
        if not held:
            return  # an empty datagram would read as the worker's exit
        if len(together := "".join(held).encode("utf-8")) <= MAX_DATAGRAM:
            _send(self._sender, together)
            return
        for packed in held:  # each record alone, cut to fit when it must
            _send(self._sender, _fitted(packed))


@dataclass(frozen=True)
class _Forwarding:
    """How this worker sends its lines, once forward_logs_to_master has set it up."""

    sender: RelaySender
    # Each renderer once, with its destinations: console and file often share the JSON line.
    renderers: list[tuple[list[str], Render]]
    level: int  # the lowest written, as a number

    def hand_over(self, record: Record) -> None:
        self.sender.hold(_packed(record, self.renderers), record["level"].no)


_forwarding: _Forwarding | None = None


def forward_logs_to_master(settings: Settings, address: str) -> None:
    """In a freshly forked worker: replace the sinks inherited from the master."""
    global _forwarding
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender.connect(address)
    logger.remove()
    _forwarding = send_records(RelaySender(sender), settings)


def send_records(sender: RelaySender, settings: Settings) -> _Forwarding:
    """loguru's records at the log level or above, from now on, rendered for each
    destination and handed to `sender`."""
    renderers = by_renderer(line_renderers(settings))
    forwarding = _Forwarding(sender, renderers, logger.level(settings.log_level).no)
    observe_records(forwarding.hand_over, forwarding.level)
    return forwarding


def request_started() -> None:
    """gunicorn's pre_request: the lines of the request wait for its end."""
    if _forwarding is not None:
        _forwarding.sender.request_started()


def request_ended() -> None:
    """gunicorn's post_request: the request's lines go to the master."""
    if _forwarding is not None:
        _forwarding.sender.request_ended()


class RelayingGunicornLogger(GunicornLogger):
    """gunicorn's logger, whose access line a worker hands to its relay sender as a line
    it has made itself: loguru would first make a record of it and offer it to each of its
    sinks, which costs more than the rest of the line. A sink that a component adds in the
    worker, for the lines logged in a request, does not see it: it comes after the request."""

    def write_access_line(self, message: str, fields: dict[str, object]) -> None:
        forwarding = _forwarding
        if forwarding is None:  # in the master, or before post_fork
            super().write_access_line(message, fields)
            return
        record = line_record(local_now(), "INFO", message, fields)
        if record["level"].no >= forwarding.level:
            forwarding.hand_over(record)


def _packed(record: Record, renderers: list[tuple[list[str], Render]]) -> str:
    lines = [(destinations, render(record)) for destinations, render in renderers]
    return pack_lines(record["level"].name, lines)


def by_renderer(renderers: dict[str, Render]) -> list[tuple[list[str], Render]]:
    """Each renderer once, with the destinations it renders for."""
    destinations: dict[Render, list[str]] = {}
    for destination, render in renderers.items():
        destinations.setdefault(render, []).append(destination)
    return [(destinations_of, render) for render, destinations_of in destinations.items()]


def pack_lines(level: str, lines: RenderedLines) -> str:
    """A record's lines, packed: what a datagram holds once or several times."""
    parts = [[destinations, len(line)] for destinations, line in lines]
    return orjson.dumps([level, parts]).decode() + "\n" + "".join([line for _, line in lines])


def unpack_records(datagram: str) -> list[tuple[str, RenderedLines]]:
    """The level and the lines of each record in a datagram: one or more made by pack_lines,
    one after the other."""
    records = []
    start = 0
    while start < len(datagram):
        header_end = datagram.index("\n", start)
        level, parts = orjson.loads(datagram[start:header_end])
        lines = []
        start = header_end + 1
        for destinations, length in parts:
            lines.append((destinations, datagram[start : start + length]))
            start += length
        records.append((level, lines))
    return records


def sent_at_and_text(datagram: bytes | memoryview) -> tuple[int, str]:
    """When a datagram was sent (time.monotonic_ns), and its records, for unpack_records."""
    [sent_at] = SENT_AT.unpack_from(datagram)
    return sent_at, str(datagram[SENT_AT.size :], "utf-8")


def _fitted(packed: str) -> bytes:
    """One record's datagram, cut to fit when it is too large."""
    datagram = packed.encode("utf-8")
    return datagram if len(datagram) <= MAX_DATAGRAM else _cut_to_fit(packed)


def _send(sender: socket.socket, datagram: bytes) -> None:
    try:
        # No SIGPIPE if the master is gone: the error below says so.
        sender.sendmsg([SENT_AT.pack(time.monotonic_ns()), datagram], (), socket.MSG_NOSIGNAL)
    except OSError as error:
        # The master is gone: stderr still reaches the operator.
        console = "".join(
            line
            for _, lines in unpack_records(datagram.decode())
            for destinations, line in lines
            if "console" in destinations
        )
        sys.stderr.write(f"log relay: {error}\n{console}")


def _cut_to_fit(message: str) -> bytes:
    """A record too large for one datagram, with its longest values cut, each with a mark
    that says how much: every line stays whole (JSON stays JSON) and reaches the master."""
    [(level, lines)] = unpack_records(message)
    limit = MAX_DATAGRAM // (2 * len(lines))
    while True:
        cut = [(destinations, _cut_line(line, limit)) for destinations, line in lines]
        datagram = pack_lines(level, cut).encode("utf-8")
        if len(datagram) <= MAX_DATAGRAM:
            return datagram
        limit //= 2


def _cut_line(line: str, limit: int) -> str:
    try:
        fields = json.loads(line)
    except ValueError:  # a text line
        return _cut_text(line.rstrip("\n"), limit) + "\n"
    share = limit // max(1, len(fields))
    for key, value in fields.items():
        if isinstance(value, str) and len(value) > share:
            fields[key] = _cut_text(value, share)
    return json_text(fields) + "\n"


def _cut_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + CUT_MARK.format(len(text) - limit)
