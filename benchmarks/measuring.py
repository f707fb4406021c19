"""wrk to load a service, and the CPU time that the service and the machine spent meanwhile."""

import os
import re
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.gunicorn_service import Gunicorn

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DURATION = r"[\d.]+(?:us|ms|s)"  # as wrk prints latencies


def master_cpu_seconds(server: Gunicorn) -> float:
    """User and system CPU time of the master, all its threads (the log writer's included)."""
    return _process_cpu_seconds(server.process.pid)


def workers_cpu_seconds(server: Gunicorn) -> float:
    return sum(_process_cpu_seconds(pid) for pid in server.worker_pids())


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
