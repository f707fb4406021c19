"""What the observability of a generated service costs, measured on this machine in one run.

Bakes projects from this template and serves each under gunicorn on loopback, loaded by
wrk, beside a bare Flask app (the ceiling) and the same app with OpenTelemetry; then times
/metrics scrapes, log lines through the master's sinks, baking, the time from cookiecutter
to a passing generated test suite, the metrics directory through 2,000 worker replacements,
and a stdout that nobody reads. Prints tables and writes every figure to
benchmarks/results/latest.json.
Not part of the test suite: see "Benchmark" in README.md.

    python3 -m benchmarks.run                      # everything, about 15 minutes
    python3 -m benchmarks.run --sections churn --ref HEAD~3   # an older template, one part
    python3 -m benchmarks.run --sections throughput --rounds 1
    python3 -m benchmarks.run --profile full       # py-spy on one worker of one variant
    python3 -m benchmarks.run --template-patch change.diff --output benchmarks/results/change.json
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from harness.envelopes import EnvelopeServer
from harness.otlp import OtlpServer

from .churn import run_churn
from .environment import BENCHMARKS_DIR, bake, ensure_venv, prepare_template
from .log_faults import run_log_faults
from .profiling import profile_worker
from .report import (
    bake_report,
    churn_report,
    log_faults_report,
    logs_report,
    profile_report,
    scrape_report,
    throughput_report,
)
from .scrape import run_scrapes
from .throughput import VARIANTS_BY_NAME, Projects, run_throughput, serve

RESULTS_DIR = BENCHMARKS_DIR / "results"
LOG_ROTATION = "1 MB"  # small, so that a run rotates (and compresses) many times
BAKES = 3


def main() -> None:
    options = _parse_arguments()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        workdir = Path(scratch)
        template = prepare_template(workdir / "template", options.ref, options.template_patch)
        python = ensure_venv(template)
        projects = Projects(template, workdir / "projects")
        if options.profile:
            _profile(options, python, projects, workdir)
            return
        results = {"machine": _machine(), "template": _describe_template(options)}
        for name in options.sections:
            print(f"\n== {name}", flush=True)
            results[name] = SECTIONS[name](python, projects, workdir, options)
            print("\n" + REPORTS[name](results[name]), flush=True)
    results["seconds"] = round(time.monotonic() - started)
    _write(results, options.output)
    print(f"\nAll figures in {options.output} ({results['seconds']} s)")


def _parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every variant")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS_BY_NAME),
        default=list(VARIANTS_BY_NAME),
        help="throughput variants to run (bare always runs: all are compared with it)",
    )
    parser.add_argument("--ref", help="bake this commit of the template, not the work tree")
    parser.add_argument(
        "--template-patch", type=Path, help="apply this diff to a copy of the template first"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument(
        "--profile",
        choices=list(VARIANTS_BY_NAME),
        help="only profile one worker of this variant with py-spy",
    )
    options = parser.parse_args()
    options.variants = ["bare", *(name for name in options.variants if name != "bare")]
    return options


def run_logs(python: Path, projects: Projects, workdir: Path, _options) -> dict:
    """The full service's own gunicorn.conf.py in a parent, four forked children logging."""
    project = projects.get(VARIANTS_BY_NAME["full"])
    log_dir = workdir / "log-throughput"
    log_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(project / "src"),
        "LOG_FILE": str(log_dir / "service.log"),
        "LOG_FORMAT": "json",
        "LOG_ROTATION": LOG_ROTATION,
        "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "metrics"),
    }
    completed = subprocess.run(
        [python, BENCHMARKS_DIR / "log_throughput.py", "--console", log_dir / "console.log"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return {**json.loads(completed.stderr.splitlines()[-1]), "rotation": LOG_ROTATION}


def run_bake(python: Path, projects: Projects, workdir: Path, _options) -> dict:
    """Bake with the default answers, then run the baked project's own tests."""
    bake_seconds = [
        _timed(bake, projects.template, {}, workdir / f"bake-{n}") for n in range(BAKES)
    ]
    started = time.perf_counter()
    project = bake(projects.template, {}, workdir / "bake-and-test")
    baked = time.perf_counter()
    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    finished = time.perf_counter()
    if tests.returncode != 0:
        raise RuntimeError(f"the baked project's tests failed:\n{tests.stdout[-3000:]}")
    return {
        "bakes": BAKES,
        "bake_seconds": round(statistics.median(bake_seconds), 2),
        "to_passing_suite_seconds": round(finished - started, 2),
        "pytest_seconds": round(finished - baked, 2),
        "tests_passed": int(re.search(r"(\d+) passed", tests.stdout)[1]),
    }


def _timed(function, *arguments) -> float:
    started = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - started


SECTIONS = {
    "throughput": run_throughput,
    "scrape": run_scrapes,
    "churn": run_churn,
    "log-faults": run_log_faults,
    "logs": run_logs,
    "bake": run_bake,
}
REPORTS = {
    "throughput": throughput_report,
    "scrape": scrape_report,
    "churn": churn_report,
    "log-faults": log_faults_report,
    "logs": logs_report,
    "bake": bake_report,
}


def _profile(options, python: Path, projects: Projects, workdir: Path) -> None:
    variant = VARIANTS_BY_NAME[options.profile]
    raw_path = options.output.parent / f"profile-{variant.name}.txt"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        EnvelopeServer() as sentry,
        OtlpServer() as collector,
        serve(
            variant, python, projects, workdir, options.workers, sentry.dsn, collector.endpoint
        ) as server,
    ):
        summary = profile_worker(server, options.duration, options.connections, raw_path)
    print(profile_report(variant.name, summary, str(raw_path)))


def _machine() -> dict:
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": (wrk.stdout or wrk.stderr).split("\n", 1)[0].strip(),
    }


def _describe_template(options) -> dict:
    commit = subprocess.run(
        ["git", "-C", BENCHMARKS_DIR.parent, "rev-parse", options.ref or "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return {
        "commit": commit,
        "work_tree": options.ref is None,  # uncommitted changes included
        "patch": str(options.template_patch) if options.template_patch else None,
    }


def _write(results: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
