"""Instructions a request costs, counted by valgrind's callgrind: a figure that repeats within
0.5 % however busy the machine is, to tell a change of a few percent from the runs' spread.

    python3 -m benchmarks.instructions                       # bare, core and full
    python3 -m benchmarks.instructions --variants core --ref HEAD~1
    python3 -m benchmarks.instructions --cpu 5               # CPU time instead, 5 rounds

Each variant serves its requests through gunicorn's own sync-worker code in one process
(apps/one_worker.py): the parser, the app, the access line and the request hooks of the
project's gunicorn.conf.py. Its log lines go to a relay end in this process that reads them
as the master does, every 10 ms. A variant is counted at 200 and at 1,200 requests, and the
difference divided by 1,000, so that start-up cancels out.

Instructions leave out the kernel's work, and what a system call costs in place is larger
than its instructions say (cache and scheduler effects): `--cpu` times the same loop in
user and system CPU, whose spread from one process to the next is 10 % and more.
"""

import argparse
import os
import re
import selectors
import socket
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path

from .environment import bake, ensure_venv, package_name, prepare_template
from .throughput import APPS_DIR, VARIANTS_BY_NAME

DRIVER = APPS_DIR / "one_worker.py"
FEWER, MORE = 200, 1_200
TOTAL = re.compile(r"^summary: (\d+)$", re.MULTILINE)
READ_EVERY_SECONDS = 0.01  # as the master's log relay (GATHER_SECONDS)


class RelayEnd(threading.Thread):
    """Where a worker's lines go: read and dropped, at most every READ_EVERY_SECONDS."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind(address)
        self._listener.listen()
        self._arrivals = selectors.DefaultSelector()
        self._arrivals.register(self._listener, selectors.EVENT_READ)
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(READ_EVERY_SECONDS):
            for key, _ in self._arrivals.select(timeout=1):
                self._read(key.fileobj)

    def _read(self, ready: socket.socket) -> None:
        if ready is self._listener:
            worker, _ = self._listener.accept()
            worker.setblocking(False)
            self._arrivals.register(worker, selectors.EVENT_READ)
            return
        try:
            while ready.recv(1 << 18):
                pass
        except BlockingIOError:
            return
        self._arrivals.unregister(ready)  # the worker has exited
        ready.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
        self._listener.close()


def run_driver(python: Path, project: Path | None, requests: int, scratch: Path, counted: bool):
    """One process of the driver; its instructions (counted) or its CPU per request."""
    relay = RelayEnd(str(scratch / "relay.sock")) if project else None
    if relay:
        relay.start()
    kind = "service" if project else "bare"
    command = [str(python), str(DRIVER), kind, str(requests), str(scratch / "relay.sock")]
    output = scratch / "callgrind.out"
    if counted:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}", *command]
    imports = [APPS_DIR, *([project / "src"] if project else [])]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(folder) for folder in imports),
        "PYTHONHASHSEED": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(scratch / "metrics"),
        "SENTRY_DSN": "http://key@127.0.0.1:9/1",  # nothing is sent for a request that succeeds
        **({"BENCH_PACKAGE": package_name(project)} if project else {}),
    }
    (scratch / "metrics").mkdir(exist_ok=True)
    try:
        result = subprocess.run(
            command, cwd=project or scratch, env=environment, capture_output=True, text=True,
            timeout=1800, check=True,
        )  # fmt: skip
    finally:
        if relay:
            relay.stop()
            (scratch / "relay.sock").unlink(missing_ok=True)
    if counted:
        return int(TOTAL.search(output.read_text()).group(1))
    user, system = (float(figure) for figure in result.stdout.split())
    return user, system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["bare", "core", "full"])
    parser.add_argument("--ref", help="bake this commit of the template, not the work tree")
    parser.add_argument("--cpu", type=int, metavar="ROUNDS", help="time CPU instead of counting")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="instructions-") as scratch_name:
        scratch = Path(scratch_name)
        template = prepare_template(scratch / "template", options.ref, None)
        python = ensure_venv(template)
        projects = {
            name: None
            if name == "bare"
            else bake(template, VARIANTS_BY_NAME[name].answers, scratch / "projects" / name)
            for name in options.variants
        }
        if options.cpu:
            report_cpu(python, projects, scratch, options.cpu)
        else:
            report_instructions(python, projects, scratch)


def report_instructions(python: Path, projects: dict, scratch: Path) -> None:
    for name, project in projects.items():
        fewer = run_driver(python, project, FEWER, scratch, counted=True)
        more = run_driver(python, project, MORE, scratch, counted=True)
        print(f"{name:10} {(more - fewer) // (MORE - FEWER):>10,} instructions a request")


def report_cpu(python: Path, projects: dict, scratch: Path, rounds: int) -> None:
    """The variants one after the other in each round; the median of each variant's rounds."""
    spent: dict[str, list[tuple[float, float]]] = {name: [] for name in projects}
    for _ in range(rounds):
        for name, project in projects.items():
            spent[name].append(run_driver(python, project, 10_000, scratch, counted=False))
    for name, rounds_spent in spent.items():
        user = statistics.median(user for user, _ in rounds_spent)
        system = statistics.median(system for _, system in rounds_spent)
        print(f"{name:10} {user:7.1f} µs user {system:6.1f} µs system a request (medians)")


if __name__ == "__main__":
    main()
