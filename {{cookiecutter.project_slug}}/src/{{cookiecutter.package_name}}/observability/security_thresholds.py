"""Per-client thresholds: many 404 answers, or many failed logins, from one client in a window.

Under gunicorn each worker serves only its share of a client's requests: an attacker spread
over the workers would stay under every worker's own count. So the workers count nothing;
each sends what it saw (one short datagram: what, from which client) to the gunicorn master,
where one ThresholdDetector sees the requests of every worker. Without gunicorn (the
development server, tests) the app keeps its own detector.

Memory is bounded: each kind of observation keeps at most `tracked_clients` clients, the
least recently seen forgotten first, so a flood of distinct addresses cannot grow it. An
IPv6 client is counted by its /64 network, which one subscriber usually holds whole:
hopping between its addresses does not reset the count.
"""

import contextlib
import ipaddress
import math
import shutil
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from .private_sockets import private_socket_address
from .server_hooks import at_master_exit

# An observation is its kind and a client address: far below this.
MAX_DATAGRAM = 256
UNKNOWN_CLIENT = "unknown"


@dataclass(frozen=True)
class Threshold:
    alert: str  # the security event logged when a client crosses it
    counted: str  # what is counted, for people: "404 answers"
    limit: int
    window_seconds: float


@dataclass(frozen=True)
class Crossing:
    threshold: Threshold
    client: str  # an address, or an IPv6 /64 network
    count: int


def client_key(address: str) -> str:
    """What a client is counted by: its IPv4 address, or its IPv6 /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return UNKNOWN_CLIENT
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class _Window:
    """One client's count: the current fixed window, and the previous one."""

    __slots__ = ("current", "previous", "quiet_until", "start")

    def __init__(self, now: float) -> None:
        self.start = now
        self.previous = 0
        self.current = 0
        self.quiet_until = 0.0

    def add_one(self, now: float, seconds: float) -> float:
        """Count one event and estimate the events of the last `seconds`: the current window
        plus the part of the previous one that still overlaps them. An attacker who
        straddles the edge of two fixed windows is not counted half."""
        elapsed = now - self.start
        if elapsed >= 2 * seconds:
            self.start, self.previous, self.current = now, 0, 0
        elif elapsed >= seconds:
            self.start, self.previous, self.current = self.start + seconds, self.current, 0
        self.current += 1
        overlap = 1 - (now - self.start) / seconds
        return self.previous * overlap + self.current


class ClientCounts:
    """One threshold's counts for the most recently seen clients."""

    def __init__(self, threshold: Threshold, tracked_clients: int) -> None:
        self.threshold = threshold
        self._tracked_clients = tracked_clients
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, client: str, now: float) -> Crossing | None:
        """Count one event of `client`; a Crossing when it reaches the limit, at most once a
        window per client, so that a long attack is reported again but not on every request."""
        window = self._windows.get(client)
        if window is None:
            window = self._windows[client] = _Window(now)
            if len(self._windows) > self._tracked_clients:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(client)
        seconds = self.threshold.window_seconds
        estimate = window.add_one(now, seconds)
        if estimate < self.threshold.limit or now < window.quiet_until:
            return None
        window.quiet_until = now + seconds
        return Crossing(self.threshold, client, math.ceil(estimate))


class ThresholdDetector:
    """Counts observations per client and calls `on_crossing` when one crosses its threshold."""

    def __init__(
        self,
        thresholds: dict[str, Threshold],
        tracked_clients: int,
        on_crossing: Callable[[Crossing], None],
    ) -> None:
        self.counts = {kind: ClientCounts(t, tracked_clients) for kind, t in thresholds.items()}
        self._on_crossing = on_crossing
        self._counting = threading.Lock()  # the development server serves from threads

    def observe(self, kind: str, client: str) -> None:
        counts = self.counts.get(kind)
        if counts is None:  # from a datagram: never trusted to be one of ours
            return
        with self._counting:
            crossing = counts.add(client_key(client), time.monotonic())
        if crossing is not None:
            self._on_crossing(crossing)


class ObservationSender:
    """A worker's end: every observation goes to the master's detector."""

    def __init__(self, address: str) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.connect(address)

    def observe(self, kind: str, client: str) -> None:
        # Never wait on a master too busy to read: under a flood, losing a few observations
        # delays an alert a little, whereas waiting would stall the worker's requests.
        with contextlib.suppress(OSError):
            self._socket.send(f"{kind} {client}".encode(), socket.MSG_DONTWAIT)


class ObservationListener:
    """The master's end: a socket in a private folder, and a thread that hands every
    observation the workers send to the detector."""

    def __init__(self, detector: ThresholdDetector) -> None:
        self._detector = detector
        address = private_socket_address("security-", "observations.sock")
        self._folder = address.parent
        self.address = str(address)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)
        self._thread = threading.Thread(
            target=self._listen, name="security-thresholds", daemon=True
        )
        self._thread.start()
        at_master_exit(self.stop)

    def _listen(self) -> None:
        while datagram := self._socket.recv(MAX_DATAGRAM):
            try:
                kind, _, client = datagram.decode("utf-8", "replace").partition(" ")
                self._detector.observe(kind, client)
            except Exception:  # one bad observation must not end the detection
                logger.exception("security thresholds: an observation failed")

    def stop(self) -> None:
        if self._socket.fileno() == -1:
            return  # already stopped
        if self._thread.is_alive():  # else nothing reads: a full queue would block the send
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as closer:
                closer.sendto(b"", self.address)  # an empty datagram ends the loop
            self._thread.join(timeout=10)
        self._socket.close()
        shutil.rmtree(self._folder, ignore_errors=True)
