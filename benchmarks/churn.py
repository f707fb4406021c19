"""Thousands of worker replacements: the multiprocess directory, the totals and the scrape.

gunicorn replaces a worker after `--max-requests` requests (and on timeouts, crashes and
reloads). Every worker writes its samples to files of its own, so the service must not let
the files of the dead ones pile up, nor lose or double what they counted.
"""

import statistics
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.gunicorn_service import BakedService, metric_total
from harness.loopback import fetch

from .environment import STARTUP_SECONDS
from .throughput import VARIANTS_BY_NAME, Projects

WORKERS = 3
MAX_REQUESTS = 5
REPLACEMENTS = 2_000  # at least: the scrapes make a few more
REQUESTS = REPLACEMENTS * MAX_REQUESTS
WARMUP = 10 * WORKERS
CLIENTS = 4
SCRAPES = 20


def run_churn(python: Path, projects: Projects, workdir: Path, _options) -> dict:
    project = projects.get(VARIANTS_BY_NAME["full"])
    metrics_dir = workdir / "churn-metrics"
    output = workdir / "churn.out"
    replace_workers = ["--max-requests", str(MAX_REQUESTS)]
    service = BakedService(python, project, output, WORKERS, options=replace_workers,
                           PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), LOG_FILE="")  # fmt: skip
    with service.start(timeout=STARTUP_SECONDS) as server:
        statuses = _send(server.url, range(WARMUP))  # every worker writes its series
        fresh = _scrape_figures(server.url, metrics_dir)
        started = time.monotonic()
        statuses += _send(server.url, range(REQUESTS))
        load_seconds = time.monotonic() - started
        after = _scrape_figures(server.url, metrics_dir)
        counted = _requests_counted(server.url)
    sent = WARMUP + REQUESTS
    return {
        "workers": WORKERS,
        "max_requests": MAX_REQUESTS,
        "replacements": output.read_text().count("Booting worker with pid") - WORKERS,
        "requests_sent": sent,
        "requests_answered": dict(statuses),
        "requests_counted": counted,
        "totals_exact": counted == {"request_total": sent, "histogram_count": sent},
        "load_seconds": round(load_seconds, 1),
        "fresh": fresh,
        "after": after,
    }


def _send(base_url: str, item_ids) -> Counter:
    def get(item_id: int) -> str:
        try:
            with urllib.request.urlopen(f"{base_url}/api/items/{item_id % 1000}", timeout=30):
                return "200"
        except urllib.error.HTTPError as error:
            return str(error.code)
        except OSError:
            return "failed"

    with ThreadPoolExecutor(CLIENTS) as pool:
        return Counter(pool.map(get, item_ids))


def _scrape_figures(url: str, metrics_dir: Path) -> dict:
    durations = []
    for _ in range(SCRAPES):
        started = time.perf_counter()
        status, _body = fetch(url + "/metrics")
        durations.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
    return {
        "files": sum(1 for _ in metrics_dir.glob("*.db")),
        "scrape_median_ms": round(statistics.median(durations) * 1000, 1),
        "scrape_max_ms": round(max(durations) * 1000, 1),
    }


def _requests_counted(url: str) -> dict:
    """Both totals from one scrape: the service counts no probes and no scrapes."""
    text = fetch(url + "/metrics")[1].decode()
    return {
        "request_total": round(metric_total(text, "flask_http_request_total")),
        "histogram_count": round(metric_total(text, "flask_http_request_duration_seconds_count")),
    }
