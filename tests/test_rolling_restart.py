"""A rolling restart behind a real load balancer fails no request.

Two instances of the default project behind haproxy (the Debian package), which checks
/readyz; each instance in turn is stopped with SIGTERM and started again while clients keep
sending. haproxy is told not to retry: only the drain (SHUTDOWN_DRAIN_SECONDS) keeps requests
away from an instance that stops, as it must for a balancer that cannot retry (a POST, say).
"""

import csv
import io
import threading
import time
from pathlib import Path

from harness.loopback import LoopbackProcess, fetch, free_port

from .load import send_all
from .prometheus import require_binary
from .service import GunicornService

CHECK_INTERVAL_MS = 200
FALL = RISE = 2
# Far longer than haproxy needs to see /readyz fail (FALL checks, CHECK_INTERVAL_MS apart).
DRAIN_SECONDS = 3
WAIT_SECONDS = 60
CLIENTS = 4
MAX_REQUESTS = 40_000  # a bound on the load, whatever the machine's speed
BATCH = 100


class Haproxy(LoopbackProcess):
    ready_path = "/livez"

    def __init__(self, workdir: Path, backends: dict[str, int]):
        super().__init__("haproxy", workdir / "haproxy.out")
        self.stats_port = free_port()
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(self._configuration(backends))

    def _configuration(self, backends: dict[str, int]) -> str:
        servers = "".join(
            f"    server {name} 127.0.0.1:{port} check\n" for name, port in backends.items()
        )
        return (
            "defaults\n    mode http\n    retries 0\n"
            "    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
            "    timeout check 5s\n"
            f"frontend service\n    bind 127.0.0.1:{self.port}\n    default_backend instances\n"
            "backend instances\n    balance roundrobin\n"
            "    option httpchk GET /readyz\n    http-check expect status 200\n"
            f"    default-server inter {CHECK_INTERVAL_MS}ms fall {FALL} rise {RISE}\n{servers}"
            f"listen stats\n    bind 127.0.0.1:{self.stats_port}\n    stats enable\n"
            "    stats uri /stats\n"
        )

    def start(self):
        command = [require_binary("haproxy", "haproxy"), "-f", str(self.config), "-db"]
        return self.launch(command, self.config.parent)

    def server_status(self, name: str) -> str:
        """UP, DOWN, or a transition ("UP 1/2"), as haproxy's statistics give it."""
        stats = fetch(f"http://127.0.0.1:{self.stats_port}/stats;csv")[1].decode()
        for row in csv.DictReader(io.StringIO(stats.lstrip("# "))):
            if row["pxname"] == "instances" and row["svname"] == name:
                return row["status"]
        raise AssertionError(f"haproxy has no server {name}")

    def wait_for(self, name: str, status: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while self.server_status(name) != status:
            assert time.monotonic() < deadline, f"{name} not {status} in {WAIT_SECONDS} s"
            time.sleep(0.05)


def test_a_rolling_restart_behind_haproxy_fails_no_request(baked, tmp_path):
    project = baked("all-defaults")
    instances = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        instances[name] = GunicornService(project, tmp_path / name, workers=2, LOG_FILE="",
                                          SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS))  # fmt: skip
    balancer = Haproxy(tmp_path, {name: service.port for name, service in instances.items()})
    outcomes = []
    restarted = threading.Event()
    try:
        for service in instances.values():
            service.start()
        balancer.start()
        for name in instances:
            balancer.wait_for(name, "UP")

        def keep_sending() -> None:
            for _ in range(MAX_REQUESTS // BATCH):
                outcomes.extend(send_all(balancer.url, ["/api/items/1"] * BATCH, CLIENTS))
                if restarted.is_set():
                    return

        load = threading.Thread(target=keep_sending)
        load.start()
        served_during_restarts = []
        for name, service in instances.items():
            before = len(outcomes)
            service.stop()  # SIGTERM, and wait for the master to exit
            balancer.wait_for(name, "DOWN")
            service.start()
            balancer.wait_for(name, "UP")
            served_during_restarts.append(len(outcomes) - before)
        restarted.set()
        load.join(timeout=WAIT_SECONDS * 5)
        assert not load.is_alive(), "the load did not stop"
    finally:
        restarted.set()
        balancer.stop()
        for service in instances.values():
            service.stop()

    statuses = [outcome.status for outcome in outcomes]
    failed = len(statuses) - statuses.count(200)
    assert failed == 0, f"{failed} of {len(statuses)} requests failed: {set(statuses)}"
    assert all(served_during_restarts), served_during_restarts
