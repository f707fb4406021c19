"""gunicorn on a free loopback port, a stand-in Sentry, and wrk to load them."""

import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ENVELOPE_PATH = re.compile(r"^/api/\d+/envelope/$")
DURATION = r"[\d.]+(?:us|ms|s)"  # as wrk prints latencies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Gunicorn:
    """A gunicorn master and its workers, started from a command and stopped by its pid."""

    def __init__(
        self, command: list, cwd: Path, env: dict, output: Path, ready_path: str,
        stdout: int | None = None,
    ):  # fmt: skip
        """`stdout`: a file descriptor for the service's stdout; by default `output` has both."""
        self.stdout = stdout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [*command, "--bind", f"127.0.0.1:{self.port}"]
        self.cwd = cwd
        self.env = {**os.environ, **env}
        self.output = output
        self.ready_path = ready_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Gunicorn":
        with self.output.open("ab") as output:
            # A session of its own: should the master hang, its workers go with it (killpg).
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=output if self.stdout is None else self.stdout,
                stderr=subprocess.STDOUT if self.stdout is None else output,
                start_new_session=True,
            )
        self._wait_until_ready()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _wait_until_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.output.read_text()[-3000:]}")
            try:
                if fetch(self.url + self.ready_path, timeout=5)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {timeout} s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]

    def master_cpu_seconds(self) -> float:
        """User and system CPU time of the master, all its threads (the log writer's included)."""
        return _process_cpu_seconds(self.process.pid)

    def workers_cpu_seconds(self) -> float:
        return sum(_process_cpu_seconds(pid) for pid in self.worker_pids())


def _process_cpu_seconds(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time of every core not idle (or stolen by the host) since boot."""
    user, nice, system, _idle, _iowait, *rest = map(
        int, Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + sum(rest)) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """This process (the envelope server's threads) and its reaped children (wrk runs)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


class EnvelopeServer:
    """Answers Sentry's envelope posts with 200, so that the SDK sends as it would in production."""

    def __init__(self):
        self.envelopes = 0
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://benchmark@127.0.0.1:{self._server.server_address[1]}/42"

    def __enter__(self) -> "EnvelopeServer":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self):
        server = self

        class EnvelopeHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as sentry.io offers

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                known = bool(ENVELOPE_PATH.match(self.path))
                server.envelopes += known
                body = b"{}" if known else b""
                self.send_response(200 if known else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass  # one line per envelope would flood the benchmark's output

        return EnvelopeHandler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a worker that exits resets its keep-alive connection: not worth a traceback


@dataclass
class WrkResult:
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float  # a stall shows here: wrk's few connections wait instead of piling up in p99
    failures: int


def run_wrk(
    url: str, seconds: int, connections: int, script: Path | None = None, script_args: tuple = ()
) -> WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script is not None:
        command += ["-s", str(script)]
    command += [url, *(["--", *map(str, script_args)] if script_args else [])]
    output = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> WrkResult:
    return WrkResult(
        requests=int(re.search(r"(\d+) requests in", output)[1]),
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),
        p50_ms=_latency_ms(output, "50%"),
        p99_ms=_latency_ms(output, "99%"),
        max_ms=_max_latency_ms(output),
        failures=_failures(output),
    )


def _latency_ms(output: str, percentile: str) -> float:
    return _milliseconds(re.search(rf"^\s+{percentile}\s+({DURATION})\s*$", output, re.M)[1])


def _max_latency_ms(output: str) -> float:
    # "Latency   <average>   <deviation>   <max>   <share within one deviation>"
    return _milliseconds(re.search(rf"Latency\s+{DURATION}\s+{DURATION}\s+({DURATION})", output)[1])


def _milliseconds(duration: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", duration).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _failures(output: str) -> int:
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return (int(non_2xx[1]) if non_2xx else 0) + (
        sum(map(int, socket_errors.groups())) if socket_errors else 0
    )
