"""Log sinks that keep the service answering when a log destination misbehaves.

Under gunicorn the master writes the lines of every worker (see log_relay.py): a sink
that waits makes the workers wait, and every request with them. So:
- the console is written by a thread of its own. A stuck reader (a stalled collector, a
  blocked container logging driver, a terminal paused with Ctrl-S) holds up no caller:
  lines wait in a buffer of CONSOLE_BUFFER_BYTES, and those that do not fit are dropped;
- the log file is loguru's rotating file, guarded: a line that cannot be written (a full
  disk) is counted as lost, and the next line tries again.
Each says on stderr when lines start being lost and when writing resumes, with how many
were lost, and reports every lost line to `count_lost_lines` (a metric, when wired).

The master writes two kinds of line to the same sinks: its own, through loguru, and those
its workers rendered, straight from the log relay's thread (see SharedSink).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, TextIO, cast

from loguru import logger

# loguru's file sink, with its rotation, retention and compression: logger.add() offers
# no way to handle its write errors but a traceback on stderr for every failing line.
from loguru._file_sink import FileSink

if TYPE_CHECKING:  # loguru's types exist for type checkers only
    from loguru import Level, Message, Record

CountLostLines = Callable[[str, str, int], None]  # sink, reason, number of lines
Render = Callable[["Record"], str]
# The lines of one record: each distinct line once, with the destinations it goes to.
RenderedLines = list[tuple[list[str], str]]

# About two seconds of lines at a thousand lines a second.
CONSOLE_BUFFER_BYTES = 1024 * 1024
NOTICES_BUFFER_BYTES = 64 * 1024
# How long a writer's thread, woken by a line, waits for more before it writes: under load
# lines come every few hundred microseconds, and it then writes, and wakes, once for many.
GATHER_SECONDS = 0.01
# How long stop() waits for a writer that makes no progress.
STUCK_AFTER_SECONDS = 0.05
# Free space a full disk must have again before the file is tried: a few freed bytes would
# take a line or two, then fail again, and each time say so.
ROOM_TO_RESUME_BYTES = 256 * 1024


def count_nothing(sink: str, reason: str, lines: int) -> None:
    """Without metrics, the notices on stderr still say how many lines were lost."""


class Sink(Protocol):
    def write(self, message: Message, /) -> object: ...


class SharedSink:
    """A sink that two threads of the master write to: loguru's, with the master's own
    lines, and the log relay's, with the lines its workers rendered. loguru's lock is its
    own: this one is held by both."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        # A plain stream (a test's capture) is flushed after every line, as loguru does.
        self._flush = getattr(sink, "flush", None)
        # The console and the file write several lines at once (one wake of a thread, one
        # write to the disk); any other sink takes them one by one.
        self._write_lines: Callable[[list[Message]], object] = getattr(
            sink, "write_lines", self._write_each
        )

    def write(self, message: Message) -> None:
        self.write_lines([message])

    def write_lines(self, messages: list[Message]) -> None:
        with self._lock:
            self._write_lines(messages)
            if self._flush is not None:
                self._flush()

    def _write_each(self, messages: list[Message]) -> None:
        for message in messages:
            self._sink.write(message)

    def stop(self) -> None:
        stop = getattr(self._sink, "stop", None)
        if stop is not None:
            stop()


class _RelayedLine(str):
    """A line as the sinks take it from loguru: a string with its record beside it."""

    __slots__ = ("_level", "_received", "_record")
    _level: str
    _received: datetime
    _record: Record | None

    @property
    def record(self) -> Record:
        if self._record is None:
            self._record = line_record(self._received, self._level, str(self), {})
        return self._record


class _Process(NamedTuple):  # what a record tells of its process
    id: int
    name: str


def _note_this_process() -> None:
    """Run again in each forked child: os.getpid() is a system call, which every line would
    otherwise make."""
    global _this_process
    _this_process = _Process(os.getpid(), "MainProcess")


_this_process: _Process
_note_this_process()
os.register_at_fork(after_in_child=_note_this_process)
# The local time zone, and the time (time.time()) at which to look it up again.
_local_zone: tuple[float, tzinfo] = (0.0, UTC)


def local_now() -> datetime:
    """datetime.now().astimezone() at a quarter of its cost: that looks the local zone up at
    every call, this once a minute. A zone changes its offset on the minute."""
    global _local_zone
    now = time.time()
    look_up_at, zone = _local_zone
    if now >= look_up_at:
        zone = cast("tzinfo", datetime.fromtimestamp(now).astimezone().tzinfo)
        _local_zone = (now - now % 60 + 60, zone)
    return datetime.fromtimestamp(now, zone)


def relayed_message(level: str, line: str, received: datetime) -> Message:
    """A line a worker rendered, as the sinks take a line from loguru. Its record has the
    fields that sinks read (the time, for rotation and syslog; the level, for syslog; the
    process, for the line LogFile writes when it can write again), and is made when a sink
    first reads it: the console never does."""
    message = _RelayedLine(line)
    message._level, message._received, message._record = level, received, None
    return cast("Message", message)


def line_record(time: datetime, level: str, message: str, extra: dict[str, object]) -> Record:
    """A record of a line made without loguru, with every field that the renderers
    (log_lines.py) and the sinks read."""
    return cast(
        "Record",
        {
            "time": time,
            "level": _level(level),
            "message": message,
            "extra": extra,
            "exception": None,
            "process": _this_process,
            "name": __name__,
        },
    )


@functools.cache
def _level(name: str) -> Level:
    return logger.level(name)


class BackgroundWriter:
    """Writes lines to a stream from a thread of its own: a caller never waits for the reader.

    Lines wait in a buffer of `capacity` characters; while it is full, new ones are
    dropped. The first drop and the end of an episode are told to `notices`.
    """

    def __init__(
        self,
        stream: TextIO,
        name: str,
        capacity: int = CONSOLE_BUFFER_BYTES,
        count_lost_lines: CountLostLines = count_nothing,
        notices: BackgroundWriter | None = None,
    ) -> None:
        self._stream = stream
        self._name = name
        self._capacity = capacity
        self._count_lost_lines = count_lost_lines
        self._notices = notices
        self._changed = threading.Condition()
        self._pending: deque[str] = deque()
        self._pending_size = 0
        self._unwritten = 0  # pending, plus the batch being written
        self._written = 0
        self._dropped = 0  # in the current episode
        # An event of its own, not the condition's: a line's notify must not end the gathering.
        self._stopping = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._write_pending, name=f"log-{name}", daemon=True)

    def write(self, line: str) -> None:
        self.write_lines([line])

    def write_lines(self, lines: list[str]) -> None:
        """Lines in the order given, each kept or dropped on its own, and one wake of the thread."""
        if os.getpid() != self._pid:
            # A forked child (a gunicorn worker before post_fork): the thread stayed behind.
            self._stream.write("".join(lines))
            self._stream.flush()
            return
        with self._changed:
            for line in lines:
                if self._pending_size + len(line) > self._capacity:
                    why = f"it is not read fast enough, a buffer of {self._capacity} bytes is full"
                    self._drop(1, "buffer_full", why)
                    continue
                self._pending.append(line)
                self._pending_size += len(line)
                self._unwritten += 1
            if self._thread.ident is None:
                self._thread.start()  # at the first line: most notices writers never need one
            self._changed.notify_all()

    def stop(self) -> None:
        """Write what is buffered while the stream takes it; give up once it stops moving.

        The thread goes on writing what is left, should the reader come back, then ends."""
        if os.getpid() != self._pid:
            return  # the parent's thread and buffer are the parent's to finish
        with self._changed:
            self._stopping.set()
            self._changed.notify_all()
            while self._unwritten and self._thread.is_alive():
                moved = partial(self._moved_since, self._written)
                if not self._changed.wait_for(moved, STUCK_AFTER_SECONDS):
                    break  # the reader is stuck
        if self._thread.ident is None and self._notices is not None:
            self._notices.stop()  # no thread ever started to do it

    def _moved_since(self, written: int) -> bool:
        return self._written != written or not self._unwritten

    def _write_pending(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopping.is_set())
            self._stopping.wait(GATHER_SECONDS)  # stop() writes what is pending at once
            with self._changed:
                if not self._pending:
                    break
                batch, lines = "".join(self._pending), len(self._pending)
                self._pending.clear()
                self._pending_size = 0
            self._write_batch(batch, lines)
        if self._notices is not None:
            self._notices.stop()  # after the last notice this writer can give

    def _write_batch(self, batch: str, lines: int) -> None:
        try:
            self._stream.write(batch)
            self._stream.flush()
            error = None
        except (OSError, ValueError) as failure:  # ValueError: the stream was closed
            error = failure
        with self._changed:
            if error is not None:
                self._drop(lines, "write_error", f"it cannot be written: {error}")
            elif self._dropped and not self._pending:
                self._notify(f"writing {self._name} again, {self._dropped} lines were dropped")
                self._dropped = 0
            self._unwritten -= lines
            self._written += lines
            self._changed.notify_all()

    def _drop(self, lines: int, reason: str, why: str) -> None:
        if not self._dropped:
            self._notify(f"dropping lines to {self._name}: {why}")
        self._dropped += lines
        self._count_lost_lines(self._name, reason, lines)

    def _notify(self, text: str) -> None:
        if self._notices is not None:
            self._notices.write(f"logging: {text}\n")


def stderr_notices() -> BackgroundWriter:
    """Notices about the sinks; stderr may be stuck as well (the same pipe as stdout, say)."""
    return BackgroundWriter(sys.stderr, "stderr", capacity=NOTICES_BUFFER_BYTES)


class LogFile:
    """loguru's rotating log file, which a full disk does not stop.

    A line that cannot be written is counted as lost. The file is then reopened for the
    next line, so that the bytes that failed, which Python still buffers, are dropped
    rather than written late, and a line cut short on the disk is taken out.
    """

    def __init__(
        self,
        path: Path,
        render: Render,
        count_lost_lines: CountLostLines = count_nothing,
        notices: BackgroundWriter | None = None,
        **file_options: object,
    ) -> None:
        self._path = path
        self._render = render
        self._options = file_options
        self._count_lost_lines = count_lost_lines
        self._notices = notices or stderr_notices()
        self._file: FileSink | None = FileSink(path, **file_options)
        self._lost = 0
        self._reason = ""

    def write(self, line: Message) -> None:
        self.write_lines([line])

    def write_lines(self, lines: list[Message]) -> None:
        """Lines in one write to the file: all of them are written, or all lost."""
        if self._reason == "no_space" and not _has_room(self._path.parent):
            self._count_lost(len(lines))
            return
        try:
            self._write(lines[0] if len(lines) == 1 else _joined(lines))
        except OSError as error:
            self._lose(error, len(lines))

    def stop(self) -> None:
        with suppress(OSError):  # a full disk: the lines it held are lost with it
            if self._file is not None:
                self._file.stop()
        self._notices.stop()

    def _write(self, line: Message) -> None:
        if self._file is None:
            _cut_partial_last_line(self._path)
            self._file = FileSink(self._path, **self._options)
        if self._lost:
            self._file.write(self._render(_resumed_record(line.record, self._lost, self._reason)))
            self._notices.write(
                f"logging: writing {self._path} again, {self._lost} lines were lost\n"
            )
            self._lost = 0
            self._reason = ""
        self._file.write(line)

    def _lose(self, error: OSError, lines: int) -> None:
        # Dropping the file object closes it, discarding what it still buffers.
        self._file = None
        if not self._lost:
            self._reason = (
                "no_space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "write_error"
            )
            self._notices.write(
                f"logging: cannot write {self._path}, its lines are lost until it works: {error}\n"
            )
        self._count_lost(lines)

    def _count_lost(self, lines: int) -> None:
        self._lost += lines
        self._count_lost_lines("file", self._reason, lines)


def _joined(lines: list[Message]) -> Message:
    """Lines as one message, with the record of the last: rotation reads its time."""
    message = _RelayedLine("".join(lines))
    message._record = lines[-1].record
    return cast("Message", message)


def _resumed_record(record: Record, lost: int, reason: str) -> Record:
    """The line that tells, in the file itself, how many lines are missing before it."""
    return {
        **record,
        # loguru's Level, not the RecordLevel of a record: it has the name a renderer reads.
        "level": logger.level("WARNING"),  # type: ignore[typeddict-item]
        "message": f"log file writable again, {lost} lines were lost ({reason})",
        "exception": None,
        "extra": {"request_id": "-", "trace_id": "-", "_logger": __name__, "log.lines_lost": lost},
    }


def _has_room(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return True  # the next write tells
    return stats.f_bavail * stats.f_frsize >= ROOM_TO_RESUME_BYTES


def _cut_partial_last_line(path: Path) -> None:
    """A line cut short by a full disk would run into the next one: take it out."""
    try:
        with open(path, "r+b") as file:
            end = file.seek(0, os.SEEK_END)
            position = end
            while position > 0:
                start = max(0, position - 64 * 1024)
                file.seek(start)
                chunk = file.read(position - start)
                if position == end and chunk.endswith(b"\n"):
                    return
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    file.truncate(start + newline + 1)
                    return
                position = start
            file.truncate(0)
    except FileNotFoundError:
        pass
