"""Carry log lines from gunicorn workers to the master, which alone writes them.

The master owns the sinks, so the log file has one writer: rotation, retention and
compression happen once and no line is interleaved. Each worker renders its lines and
sends every record as one datagram on a Unix socket. A datagram arrives whole or not
at all, and no lock is shared between processes: a worker killed in the middle of
logging (SIGKILL, the OOM killer) cannot block the others, as a queue shared across
processes would, whose lock dies held with the worker.

A datagram is a header line, the JSON array [level, [[destinations, length], ...]], then
each distinct line once, as rendered (console and file often share the JSON line): the
lines are not escaped a second time, and the master only slices and writes them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from loguru import logger

from ..settings import Settings
from .log_lines import line_renderers
from .log_record_keys import PACKED
from .log_sinks import Render
from .logging import write_rendered
from .private_sockets import private_socket_address
from .server_hooks import at_master_exit

if TYPE_CHECKING:  # loguru's types exist for type checkers only
    from loguru import Record

# The largest datagram a default Linux socket buffer takes whole, with room to spare.
MAX_DATAGRAM = 200 * 1024
CUT_MARK = " [...{} characters cut by the log relay]"
# The format of the worker's sink: loguru fills in the datagram that _pack has made.
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
            level, lines = unpack_lines(datagram.decode("utf-8"))
            with self._writing:
                write_rendered(level, lines)

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


def forward_logs_to_master(settings: Settings, address: str) -> None:
    """In a freshly forked worker: replace the sinks inherited from the master."""
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(address)
    renderers = line_renderers(settings)
    logger.remove()
    logger.add(
        lambda message: _send(sender, message),
        level=settings.log_level,
        format=lambda record: _pack(record, renderers),
    )


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
    """The datagram of a record rendered as `lines` ({destination: line})."""
    destinations_by_line: dict[str, list[str]] = {}
    for destination, line in lines.items():
        destinations_by_line.setdefault(line, []).append(destination)
    parts = [[destinations, len(line)] for line, destinations in destinations_by_line.items()]
    return json.dumps([level, parts]) + "\n" + "".join(destinations_by_line)


def unpack_lines(datagram: str) -> tuple[str, dict[str, str]]:
    """The level and the lines ({destination: line}) of a datagram made by pack_lines."""
    header, _, body = datagram.partition("\n")
    level, parts = json.loads(header)
    lines: dict[str, str] = {}
    start = 0
    for destinations, length in parts:
        lines.update(dict.fromkeys(destinations, body[start : start + length]))
        start += length
    return level, lines


def _send(sender: socket.socket, message: str) -> None:
    datagram = message.encode("utf-8")
    if len(datagram) > MAX_DATAGRAM:
        datagram = _cut_to_fit(message)
    try:
        sender.send(datagram)
    except OSError as error:
        # The master is gone: stderr still reaches the operator.
        _, lines = unpack_lines(message)
        sys.stderr.write(f"log relay: {error}\n{lines['console']}")


def _cut_to_fit(message: str) -> bytes:
    """A record too large for one datagram, with its longest values cut, each with a mark
    that says how much: every line stays whole (JSON stays JSON) and reaches the master."""
    level, lines = unpack_lines(message)
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
    return json.dumps(fields) + "\n"  # parsed from JSON: nothing to convert


def _cut_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + CUT_MARK.format(len(text) - limit)
