"""How long a /metrics scrape takes, and how large it is, as workers and routes grow.

In multiprocess mode every worker keeps its own sample files and a scrape reads and
adds up all of them, so both the number of workers and the number of routes that saw
traffic (the request metrics have one series per route) make a scrape heavier.
"""

import re
import statistics
import time
import urllib.request
from pathlib import Path

from harness.gunicorn_service import BakedService

from .environment import BENCHMARKS_DIR, STARTUP_SECONDS, package_name
from .measuring import run_wrk
from .throughput import APPS_DIR, VARIANTS_BY_NAME, Projects

WORKER_COUNTS = (1, 4, 8)
ROUTE_COUNTS = (10, 100)
LOAD_SECONDS = 3
SCRAPES = 20
# Each worker keeps what it learnt of the sample files and of each format's text between
# scrapes, so its first scrapes cost more, and so do the others' while workers add the
# series of their own first /metrics request. Prometheus scrapes every 15 s for as long as the
# service runs: the medians compared with the target are taken after this many untimed
# scrapes per worker in each format, and the first scrapes are reported on their own.
WARM_UP_SCRAPES_PER_WORKER = 5
SAMPLE_FILE = re.compile(r"_(\d+)\.db$")
# What Prometheus asks for (its default scrape_protocols): OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def run_scrapes(python: Path, projects: Projects, workdir: Path, _options) -> list[dict]:
    project = projects.get(VARIANTS_BY_NAME["full"])
    rows = []
    for workers in WORKER_COUNTS:
        for routes in ROUTE_COUNTS:
            rows.append(_measure(python, project, workdir, workers, routes))
            print(f"  {workers} workers, {routes} routes: {rows[-1]['median_ms']} ms", flush=True)
    return rows


def _measure(python: Path, project: Path, workdir: Path, workers: int, routes: int) -> dict:
    metrics_dir = workdir / f"scrape-{workers}-{routes}"
    settings = {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "BENCH_PACKAGE": package_name(project),
        "BENCH_ROUTES": str(routes),
    }
    output = workdir / f"scrape-{workers}-{routes}.out"
    service = BakedService(python, project, output, workers, "many_routes:create_app()",
                           pythonpath=[APPS_DIR], **settings)  # fmt: skip
    with service.start(timeout=STARTUP_SECONDS) as server:
        # Enough requests that every worker serves every route: each writes every series.
        run_wrk(server.url, LOAD_SECONDS, 2 * workers, BENCHMARKS_DIR / "routes.lua", (routes,))
        url, as_prometheus_asks = server.url + "/metrics", {"Accept": PROMETHEUS_ACCEPT}
        first, _ = _scrape(url)
        for headers in ({}, as_prometheus_asks):
            _scrape(url, headers, WARM_UP_SCRAPES_PER_WORKER * workers)
        durations, body = _scrape(url)
        as_prometheus, _ = _scrape(url, as_prometheus_asks)
        workers_with_samples = _workers_with_samples(metrics_dir)  # the exit folds them away
    return {
        "workers": workers,
        "routes": routes,
        "workers_with_samples": workers_with_samples,
        "bytes": len(body),
        "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
        "median_ms": round(statistics.median(durations) * 1000, 1),
        "max_ms": round(max(durations) * 1000, 1),
        "openmetrics_median_ms": round(statistics.median(as_prometheus) * 1000, 1),
        "first_median_ms": round(statistics.median(first) * 1000, 1),
    }


def _scrape(
    url: str, headers: dict[str, str] | None = None, scrapes: int = SCRAPES
) -> tuple[list[float], bytes]:
    durations = []
    for _ in range(scrapes):
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
            status, body = answer.status, answer.read()
        durations.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
    return durations, body


def _workers_with_samples(metrics_dir: Path) -> int:
    pids = {match[1] for path in metrics_dir.iterdir() if (match := SAMPLE_FILE.search(path.name))}
    return len(pids)
