"""A log reader that stops reading: requests go on, console lines are dropped and counted.

The service's stdout is a pipe that nobody reads, as with a stalled log collector, a blocked
container logging driver or a terminal paused with Ctrl-S. The same load runs once with stdout
read (into a file) and once stuck; the figures are the request latencies side by side, the
console lines dropped (log_lines_dropped_total) and whether the log file kept every line.
"""

import json
import os
import statistics
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.gunicorn_service import BakedService

from .environment import STARTUP_SECONDS
from .throughput import VARIANTS_BY_NAME, Projects

WORKERS = 3
REQUESTS = 3_000
CLIENTS = 8


def run_log_faults(python: Path, projects: Projects, workdir: Path, _options) -> dict:
    project = projects.get(VARIANTS_BY_NAME["full"])
    read = _serve(python, project, workdir / "stdout-read", stuck=False)
    stuck = _serve(python, project, workdir / "stdout-stuck", stuck=True)
    return {"workers": WORKERS, "requests": REQUESTS, "clients": CLIENTS,
            "stdout_read": read, "stdout_stuck": stuck}  # fmt: skip


def _serve(python: Path, project: Path, folder: Path, stuck: bool) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / "service.log"
    service = BakedService(python, project, folder / "gunicorn.out", WORKERS,
                           LOG_FILE=str(log_file), LOG_ROTATION="1 GB")  # fmt: skip
    unread, pipe_end = os.pipe() if stuck else (None, None)
    try:
        with service.start(stdout=pipe_end, timeout=STARTUP_SECONDS) as server:
            ids, latencies = _send(server.url)
            dropped = round(server.metric("log_lines_dropped_total", sink="console"))
    finally:
        for descriptor in (unread, pipe_end):
            if descriptor is not None:
                os.close(descriptor)
    logged = {json.loads(line).get("http.request.id") for line in log_file.open()}
    return {
        "latency_median_ms": round(statistics.median(latencies) * 1000, 2),
        "latency_p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 2),
        "latency_max_ms": round(max(latencies) * 1000, 1),
        "console_lines_dropped": dropped,
        "file_has_every_access_line": ids <= logged,
    }


def _send(base_url: str) -> tuple[set[str], list[float]]:
    def get(number: int) -> tuple[str, float]:
        request_id = uuid.uuid4().hex
        request = urllib.request.Request(
            f"{base_url}/api/items/{number % 1000}", headers={"X-Request-ID": request_id}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        return request_id, time.perf_counter() - started

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(get, range(REQUESTS)))
    return {request_id for request_id, _ in answers}, [seconds for _, seconds in answers]
