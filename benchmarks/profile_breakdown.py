"""CPU per request, per component: py-spy on one worker, scaled by the workers' measured CPU.

    python3 -m benchmarks.profile_breakdown --variants bare full --duration 20

For each variant: gunicorn with 2 sync workers, 2 s of warm-up, then wrk for `duration`
seconds while py-spy (non-blocking, so the worker is not paused) samples one worker. The
workers' CPU time over the run divided by wrk's request count gives CPU per request; each
component's share of the worker's samples times that gives its µs per request. Raw stacks
are kept in benchmarks/results/breakdown-<variant>.txt.
"""

import argparse
import dataclasses
import json
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from harness.envelopes import EnvelopeServer
from harness.otlp import OtlpServer

from .environment import BENCHMARKS_DIR, ensure_venv, prepare_template, venv_tool
from .measuring import master_cpu_seconds, parse_wrk, run_wrk, workers_cpu_seconds
from .throughput import ENDPOINT, VARIANTS_BY_NAME, Projects, serve

RESULTS_DIR = BENCHMARKS_DIR / "results"
RATE = 500
MASTER = False  # --master: sample the gunicorn master (the log relay's writer) instead
# Leaf frames of a thread blocked on a socket or a lock: not CPU.
WAITS = ("readinto", "_safe_read", "_read_status", "Thread.run", "wait (", "select")

# Innermost frame that matches decides the owner: (substring of the frame, owner).
BOUNDARIES = [
    ("request_ended (", "a request's log lines sent to the master (post_request)"),
    ("log_adapters.py", "access line (gunicorn access)"),
    ("views.py", "view itself"),
    ("request_context.py", "request id + context hooks"),
    ("errors.py", "Sentry: tag request ids hook"),
    ("_request_started (sentry_sdk/integrations/flask.py", "Sentry: request_started signal"),
    ("timeouts.py", "timeouts hook"),
    ("security", "security hooks"),
    ("observability/metrics.py", "metrics: own hooks (requests, in flight, resources, timeouts)"),
    ("prometheus_flask_exporter", "metrics: exporter before/after hooks"),
    ("observability/tracing.py", "tracing hooks"),
    ("health.py", "health/shutdown"),
    ("shutdown.py", "health/shutdown"),
    ("flask/", "Flask + werkzeug core"),
    ("werkzeug/", "Flask + werkzeug core"),
    ("sentry_sdk/integrations/wsgi.py", "Sentry: WSGI middleware"),
    ("sentry_patched_wsgi_app", "Sentry: WSGI middleware"),
    ("gunicorn/", "gunicorn (parse, socket I/O)"),
]
# Inside a log call (any frame matches, first rule wins).
LOG_DETAILS = [
    ("sentry_sdk", "Sentry breadcrumb handler"),
    ("_keep_log_line", "Sentry breadcrumb handler"),  # errors only: the request's own list
    ("log_lines.py", "render line (fields + json.dumps)"),
    ("_pack (", "pack datagram (json.dumps)"),
    ("_send (", "relay send (socket)"),
    ("_add_request_context", "patcher (context vars)"),
]
# Inside Sentry's middleware (any frame matches, first rule wins).
SENTRY_DETAILS = [
    ("sessions.py", "session tracking"),
    ("track_session", "session tracking"),
    ("continue_trace", "transaction"),
    ("start_transaction", "transaction"),
    ("tracing", "transaction"),
    ("isolation_scope", "isolation scope fork"),
    ("_is_localhost", "attributes (client ip, localhost)"),
    ("set_attribute", "attributes (client ip, localhost)"),
    ("_make_wsgi_event_processor", "event processor setup"),
    ("clear_breadcrumbs", "isolation scope fork"),
]


def classify(frames: list[str]) -> tuple[str, str]:
    logger_at = next((i for i, f in enumerate(frames) if "loguru/_logger.py" in f), None)
    if logger_at is not None:
        caller = frames[logger_at - 1] if logger_at else ""
        owner = (
            "access line (gunicorn access)"
            if any("log_adapters.py" in f for f in frames)
            else "app log line (view's logger.info)"
            if "views.py" in caller
            else f"other log call ({caller.split(' (')[0]})"
        )
        inner = frames[logger_at:]
        detail = next(
            (name for key, name in LOG_DETAILS if any(key in f for f in inner)),
            "loguru core (record, dispatch)",
        )
        return owner, detail
    for frame in reversed(frames):
        for key, owner in BOUNDARIES:
            if key in frame:
                if owner == "Sentry: WSGI middleware":
                    at = frames.index(frame)
                    inner = frames[at:]
                    detail = next(
                        (name for k, name in SENTRY_DETAILS if any(k in f for f in inner[1:])),
                        "other",
                    )
                    return owner, detail
                return owner, ""
    return "other (" + (frames[-1].split(" (")[0] if frames else "?") + ")", ""


def summarize(collapsed: str) -> tuple[int, Counter, Counter]:
    owners, details, total = Counter(), Counter(), 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue  # the rest of a frame name that held a line break
        thread, *frames = stack.split(";")
        n = int(count)
        total += n
        if not frames:
            continue  # idle
        if "MainThread" not in thread:
            waiting = any(w in frames[-1] for w in WAITS)
            owners[
                f"other thread: {thread.split(': ')[-1]}{' (waiting on I/O)' if waiting else ''}"
            ] += n
            continue
        if any(w in frames[-1] for w in ("close_graceful", "socket.accept")):
            owners["waiting: client's FIN after the answer, accept (not CPU)"] += n
            continue
        if not any("gunicorn/workers/sync.py" in f for f in frames):
            owners["unattributed (truncated stack)"] += n
            continue
        owner, detail = classify(frames)
        owners[owner] += n
        if detail:
            details[(owner, detail)] += n
    return total, owners, details


def profile(server, seconds: int, connections: int, output: Path) -> dict:
    url = server.url + ENDPOINT
    run_wrk(url, 2, connections)
    workers_before, master_before = workers_cpu_seconds(server), master_cpu_seconds(server)
    load = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = server.process.pid if MASTER else server.worker_pids()[0]
    spy = subprocess.run(
        [venv_tool("py-spy"), "record", "--pid", str(pid), "--nonblocking",
         "--duration", str(seconds), "--rate", str(RATE), "--threads", "--format", "raw",
         "--output", output],
        capture_output=True, timeout=seconds + 60,
    )  # fmt: skip
    wrk = parse_wrk(load.communicate(timeout=seconds + 30)[0])
    workers_cpu = workers_cpu_seconds(server) - workers_before
    master_cpu = master_cpu_seconds(server) - master_before
    if spy.returncode != 0:
        raise RuntimeError(spy.stderr.decode()[-2000:])
    return {
        "requests": wrk.requests,
        "req_per_s": wrk.requests_per_second,
        "p99_ms": wrk.p99_ms,
        "workers_cpu_us_per_request": 1e6 * workers_cpu / max(wrk.requests, 1),
        "master_cpu_us_per_request": 1e6 * master_cpu / max(wrk.requests, 1),
    }


def report(name: str, figures: dict, raw: Path) -> str:
    total, owners, details = summarize(raw.read_text())
    waits = sum(n for owner, n in owners.items() if _waiting(owner))
    on_cpu = total - waits  # the workers' measured CPU is spread over these samples only
    per_request = figures["workers_cpu_us_per_request"]
    lines = [
        f"== {name}: {figures['requests']} requests, {figures['req_per_s']:.0f} req/s, "
        f"p99 {figures['p99_ms']} ms, workers {per_request:.0f} µs/req, "
        f"master {figures['master_cpu_us_per_request']:.0f} µs/req, {total} samples, "
        f"{on_cpu} on CPU, envelopes {figures.get('envelopes')}",
    ]
    for owner, count in owners.most_common():
        us = 0 if _waiting(owner) else per_request * count / on_cpu
        lines.append(f"{owner:<60} {100 * count / total:5.1f} % {us:7.0f} µs")
        for (detail_owner, detail), n in details.most_common():
            if detail_owner == owner:
                us = per_request * n / on_cpu
                lines.append(f"    {detail:<56} {100 * n / total:5.1f} % {us:7.0f} µs")
    return "\n".join(lines)


def _waiting(owner: str) -> bool:
    return "waiting" in owner or "not CPU" in owner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", default=["bare", "full"])
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--master", action="store_true")
    options = parser.parse_args()
    global MASTER
    MASTER = options.master
    RESULTS_DIR.mkdir(exist_ok=True)
    figures_path = RESULTS_DIR / "breakdown.json"
    if options.report_only:
        figures = json.loads(figures_path.read_text())
        for name in options.variants:
            print(report(name, figures[name], RESULTS_DIR / f"breakdown-{name}.txt"))
        return
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="breakdown-") as scratch:
        workdir = Path(scratch)
        template = prepare_template(workdir / "template", None, None)
        python = ensure_venv(template)
        projects = Projects(template, workdir / "projects")
        for name in options.variants:
            base, _, setting = name.partition("+")  # "full+SENTRY_TRACES_SAMPLE_RATE=0"
            variant = VARIANTS_BY_NAME[base]
            if setting:
                key, _, value = setting.partition("=")
                env = {**dict(variant.env), key: value}
                variant = dataclasses.replace(variant, env=type(variant.env)(env.items()))
            raw = RESULTS_DIR / f"breakdown-{name}.txt"
            with (
                EnvelopeServer(items_file=RESULTS_DIR / f"envelopes-{name}.jsonl") as sentry,
                OtlpServer() as collector,
                serve(
                    variant, python, projects, workdir, 2, sentry.dsn, collector.endpoint
                ) as server,
            ):
                figures[name] = profile(server, options.duration, options.connections, raw)
                figures[name]["envelopes"] = sentry.envelopes
            figures_path.write_text(json.dumps(figures, indent=2))
            print(report(name, figures[name], raw), flush=True)


if __name__ == "__main__":
    main()
