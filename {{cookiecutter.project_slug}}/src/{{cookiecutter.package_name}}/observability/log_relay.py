"""Carry log lines from gunicorn workers to the master, which alone writes them.

The master owns the sinks, so the log file has one writer: rotation, retention and
compression happen once and no line is interleaved. Each worker renders its lines and
sends every record as one datagram on a Unix socket. A datagram arrives whole or not
at all, and no lock is shared between processes: a worker killed in the middle of
logging (SIGKILL, the OOM killer) cannot block the others, as a queue shared across
processes would, whose lock dies held with the worker.

A record is packed as a header line, the JSON array [level, [[destinations, length], ...]],
then each distinct line once, as rendered (console and file often share the JSON line):
the lines are not escaped a second time, and the master only slices and writes them.

A datagram holds one record or several. The lines a worker logs while it serves a request
wait for its end, and a busy worker sends the lines of the requests that ended at most once
every GATHER_SECONDS (see RelaySender): it wakes the master once for many requests, instead
of once for each line. A line at WARNING or above goes at once, with the lines held before it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from loguru import logger

from ..settings import Settings
from .log_lines import json_text, line_renderers
from .log_record_keys import PACKED
from .log_sinks import Render
from .logging import write_rendered
from .private_sockets import private_socket_address
from .server_hooks import at_master_exit

if TYPE_CHECKING:  # loguru's types exist for type checkers only
    from loguru import Message, Record

# The largest datagram a default Linux socket buffer takes whole, with room to spare.
MAX_DATAGRAM = 200 * 1024
CUT_MARK = " [...{} characters cut by the log relay]"
# A request's lines wait for its end until they make this many characters: a request that
# logs a lot sends them as it goes, and a worker holds little.
HELD_CHARACTERS = 16 * 1024
# A worker sends the lines of the requests that ended at most once in this long: short enough
# to read as at once, long enough for a busy worker to serve several requests meanwhile.
GATHER_SECONDS = 0.01
# The lines of a worker's last requests before it goes idle wait this long for a thread that
# sends them. Longer than the gathering, so that in a busy worker, where the requests' ends
# send the lines, the thread seldom wakes to take the GIL from them.
IDLE_SEND_SECONDS = 0.1
# How long stop() waits for the sending thread to finish.
STOP_TIMEOUT_SECONDS = 5
# The format of the worker's sink: loguru fills in the packed record that _pack has made.
_SEND_PACKED = "{extra[" + PACKED + "]}"


class LogRelay:
    """The master's end: a socket, and a thread that writes what arrives to the sinks."""

    def __init__(self) -> None:
        address = private_socket_address("log-relay-", "relay.sock")
        self._folder = address.parent
        self.address = str(address)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)
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
        while datagram := self._socket.recv(MAX_DATAGRAM):
            records = unpack_records(datagram.decode("utf-8"))
            with self._writing:
                write_rendered(records)

    def paused(self, configure: Callable[[Settings], None]) -> Callable[[Settings], None]:
        """`configure`, run between two relayed lines: the sinks it swaps (on HUP) then miss
        none and write none twice, and lines sent meanwhile wait in the socket."""

        def configure_paused(settings: Settings) -> None:
            with self._writing:
                configure(settings)

        return configure_paused

    def stop(self) -> None:
        """Write everything already sent, then close: the workers have exited by now."""
        if self._socket.fileno() == -1:
            return  # already stopped
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as closer:
            closer.sendto(b"", self.address)  # an empty datagram ends the loop
        self._thread.join(timeout=10)
        self._socket.close()
        shutil.rmtree(self._folder, ignore_errors=True)


@functools.cache
def start_log_relay() -> LogRelay:
    """In the master; gunicorn re-runs its configuration on HUP, and the relay stays."""
    return LogRelay()


class RelaySender:
    """A worker's end, loguru's sink there: it sends a record logged outside any request to
    the master at once, but holds the lines of a request in progress. A request's end sends
    all the lines held, together, unless the sender sent less than `gather_seconds` ago (or
    was made less than that ago); then a thread of the sender's own sends them after
    `idle_seconds`, if no request's end has done it first.

    A line at WARNING or above, a line outside a request, or HELD_CHARACTERS of lines sends
    what is held at once; so does stop(), which loguru calls as the worker exits (it removes
    every sink at exit).
    gunicorn reports a request's end even when the worker timeout aborts it. So the lines
    that are held and then lost are at most the INFO and DEBUG lines of the requests that a
    worker served in its last `gather_seconds` (`idle_seconds` if it went idle), when it was
    killed outright (SIGKILL, the OOM killer).
    """

    def __init__(self, sender: socket.socket, gather_seconds: float, idle_seconds: float) -> None:
        self._sender = sender
        self._held: list[str] = []
        self._held_characters = 0
        self._requests = 0  # in progress: several, with gunicorn's threaded workers
        self._lock = threading.Lock()
        self._gather_seconds = gather_seconds
        self._idle_seconds = idle_seconds
        self._sent_at = time.monotonic()
        self._held_after_end = threading.Event()  # a request's end left lines held
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._send_when_idle, name="log-relay-sender", daemon=True
        )
        self._thread.start()

    def write(self, message: Message) -> None:
        with self._lock:
            self._held.append(message)
            self._held_characters += len(message)
            if (
                not self._requests
                or self._held_characters >= HELD_CHARACTERS
                or message.record["level"].no >= logging.WARNING
            ):
                self._send_held()

    def request_started(self) -> None:
        with self._lock:
            self._requests += 1

    def request_ended(self) -> None:
        with self._lock:
            self._requests = max(0, self._requests - 1)
            if time.monotonic() - self._sent_at >= self._gather_seconds:
                self._send_held()
                return
        self._held_after_end.set()  # wakes the thread only when it is not waiting already

    def stop(self) -> None:
        """Have the thread send what is held, now, and end: loguru calls it when it removes the
        sink, as the worker exits."""
        self._stopping.set()
        self._held_after_end.set()
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)

    def _send_when_idle(self) -> None:
        while not self._stopping.is_set():
            self._held_after_end.wait()
            self._stopping.wait(self._idle_seconds)  # stop() has it send at once
            self._held_after_end.clear()
            with self._lock:
                self._send_held()

    def _send_held(self) -> None:
        held, self._held, self._held_characters = self._held, [], 0
        if not held:
            return  # an empty datagram is the master's signal to stop
        self._sent_at = time.monotonic()
        if len(together := "".join(held).encode("utf-8")) <= MAX_DATAGRAM:
            _send(self._sender, together)
            return
        for packed in held:  # each record alone, cut to fit when it must
            _send(self._sender, _fitted(packed))


# This worker's sender, once forward_logs_to_master has made it.
_relay_sender: RelaySender | None = None


def forward_logs_to_master(settings: Settings, address: str) -> None:
    """In a freshly forked worker: replace the sinks inherited from the master."""
    global _relay_sender
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(address)
    _relay_sender = RelaySender(sender, GATHER_SECONDS, IDLE_SEND_SECONDS)
    renderers = line_renderers(settings)
    logger.remove()
    logger.add(
        _relay_sender,
        level=settings.log_level,
        format=lambda record: _pack(record, renderers),
    )


def request_started() -> None:
    """gunicorn's pre_request: the lines of the request wait for its end."""
    if _relay_sender is not None:
        _relay_sender.request_started()


def request_ended() -> None:
    """gunicorn's post_request: the request's lines go to the master, with those of the
    requests that end soon after."""
    if _relay_sender is not None:
        _relay_sender.request_ended()


def _pack(record: Record, renderers: dict[str, Render]) -> str:
    # Console and file often share the JSON renderer: render once.
    rendered: dict[Render, str] = {}
    lines = {}
    for destination, render in renderers.items():
        if render not in rendered:
            rendered[render] = render(record)
        lines[destination] = rendered[render]
    record["extra"][PACKED] = pack_lines(record["level"].name, lines)
    return _SEND_PACKED


def pack_lines(level: str, lines: dict[str, str]) -> str:
    """A record rendered as `lines` ({destination: line}), packed: what a datagram holds
    once or several times."""
    destinations_by_line: dict[str, list[str]] = {}
    for destination, line in lines.items():
        destinations_by_line.setdefault(line, []).append(destination)
    parts = [[destinations, len(line)] for line, destinations in destinations_by_line.items()]
    return orjson.dumps([level, parts]).decode() + "\n" + "".join(destinations_by_line)


def unpack_records(datagram: str) -> list[tuple[str, dict[str, str]]]:
    """The level and the lines ({destination: line}) of each record in a datagram: one or
    more made by pack_lines, one after the other."""
    records = []
    start = 0
    while start < len(datagram):
        header_end = datagram.index("\n", start)
        level, parts = orjson.loads(datagram[start:header_end])
        lines: dict[str, str] = {}
        start = header_end + 1
        for destinations, length in parts:
            lines.update(dict.fromkeys(destinations, datagram[start : start + length]))
            start += length
        records.append((level, lines))
    return records


def _fitted(packed: str) -> bytes:
    """One record's datagram, cut to fit when it is too large."""
    datagram = packed.encode("utf-8")
    return datagram if len(datagram) <= MAX_DATAGRAM else _cut_to_fit(packed)


def _send(sender: socket.socket, datagram: bytes) -> None:
    try:
        sender.send(datagram)
    except OSError as error:
        # The master is gone: stderr still reaches the operator.
        lines = "".join(lines["console"] for _, lines in unpack_records(datagram.decode()))
        sys.stderr.write(f"log relay: {error}\n{lines}")


def _cut_to_fit(message: str) -> bytes:
    """A record too large for one datagram, with its longest values cut, each with a mark
    that says how much: every line stays whole (JSON stays JSON) and reaches the master."""
    [(level, lines)] = unpack_records(message)
    limit = MAX_DATAGRAM // (2 * len(set(lines.values())))
    while True:
        cut = {destination: _cut_line(line, limit) for destination, line in lines.items()}
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
