"""Throughput and latency of each variant under gunicorn, loaded by wrk on one endpoint."""

import shutil
import socketserver
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path

from harness.envelopes import EnvelopeServer
from harness.gunicorn_service import BakedService, Gunicorn
from harness.otlp import OtlpServer

from .environment import BENCHMARKS_DIR, COMPONENTS, STARTUP_SECONDS, bake, package_name
from .measuring import (
    machine_busy_seconds,
    master_cpu_seconds,
    own_cpu_seconds,
    run_wrk,
    workers_cpu_seconds,
)

ENDPOINT = "/api/items/7"
REALISTIC_ENDPOINT = "/api/reports/7"  # apps/realistic.py: a millisecond of CPU, 3 KB of JSON
APPS_DIR = BENCHMARKS_DIR / "apps"
# Every switch of the component table off: logging and request ids cannot be switched off,
# this is the least a baked service runs.
CORE = {**{switch: "no" for switch in COMPONENTS}, "log_format": "text"}


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    answers: dict | None = None  # a baked service; None for a plain app of apps/plain.py
    plain_app: str | None = None
    sentry: bool = False
    otlp: bool = False  # exports to the local OTLP receiver
    syslog: bool = False  # ships its log lines to the local syslog receiver
    env: tuple = ()  # extra settings, as (name, value) pairs
    endpoint: str = ENDPOINT  # the one that wrk loads
    app: str = ""  # a baked service's app replaced, in gunicorn's notation (from apps/)


VARIANTS = [
    Variant(
        "bare",
        "plain Flask app, no instrumentation (the ceiling)",
        plain_app="plain:create_bare_app()",
    ),
    Variant(
        "bare-realistic",
        "plain Flask app, an endpoint with 1 ms of CPU and 3 KB of JSON",
        plain_app="realistic:create_bare_app()",
        endpoint=REALISTIC_ENDPOINT,
    ),
    Variant(
        "opentelemetry",
        "plain app + OpenTelemetry Flask instrumentation, Prometheus reader",
        plain_app="plain:create_otel_app()",
    ),
    Variant(
        "opentelemetry-full",
        "plain app + OpenTelemetry traces (100 %), metrics and log correlation, over OTLP",
        plain_app="plain:create_otel_full_app()",
        otlp=True,
    ),
    Variant("core", "service: text logs on stdout, request ids (always on)", answers=CORE),
    Variant("json-logs", "core with JSON logs", answers={**CORE, "log_format": "json"}),
    Variant(
        "file-logging", "core + rotating JSON log file", answers={**CORE, "file_logging": "yes"}
    ),
    Variant("metrics", "core + Prometheus metrics", answers={**CORE, "use_prometheus": "yes"}),
    Variant(
        "tracing-off",
        "core + tracing, no endpoint set (inactive)",
        answers={**CORE, "use_opentelemetry": "yes"},
    ),
    Variant(
        "tracing",
        "core + tracing, every request sampled (local OTLP receiver)",
        answers={**CORE, "use_opentelemetry": "yes"},
        otlp=True,
        env=(("OTEL_TRACES_SAMPLER_ARG", "1.0"),),
    ),
    Variant(
        "tracing-10",
        "core + tracing, 10 % of requests sampled (local OTLP receiver)",
        answers={**CORE, "use_opentelemetry": "yes"},
        otlp=True,
        env=(("OTEL_TRACES_SAMPLER_ARG", "0.1"),),
    ),
    Variant(
        "sentry",
        "core + Sentry (local envelope server)",
        answers={**CORE, "use_sentry": "yes"},
        sentry=True,
    ),
    Variant(
        "full",
        "every component on: JSON logs, file, metrics, Sentry, request ids; tracing inactive",
        answers={},
        sentry=True,
    ),
    Variant(
        "full-realistic",
        "full, on the endpoint of bare-realistic",
        answers={},
        sentry=True,
        endpoint=REALISTIC_ENDPOINT,
        app="realistic:create_service_app()",
    ),
    Variant(
        "full-tracing",
        "full, tracing every request to the local OTLP receiver",
        answers={},
        sentry=True,
        otlp=True,
    ),
    # A run starts with an empty file and writes about 30 MB: the default 50 MB never rotates
    # in it. At 10 MB every run rotates (and compresses) a few times, as production does daily.
    Variant(
        "full-syslog",
        "full, every log line also shipped over TCP syslog to a local receiver",
        answers={},
        sentry=True,
        syslog=True,
    ),
    Variant(
        "full-rotating",
        "full, rotating its log file every 10 MB",
        answers={},
        sentry=True,
        env=(("LOG_ROTATION", "10 MB"),),
    ),
]
VARIANTS_BY_NAME = {variant.name: variant for variant in VARIANTS}


class Projects:
    """Each variant's project, baked once per run."""

    def __init__(self, template: Path, root: Path):
        self.template = template
        self.root = root
        self._paths: dict[str, Path] = {}

    def get(self, variant: Variant) -> Path:
        if variant.name not in self._paths:
            self._paths[variant.name] = bake(
                self.template, variant.answers, self.root / variant.name
            )
        return self._paths[variant.name]


class SyslogReceiver(socketserver.ThreadingTCPServer):
    """A syslog collector on loopback that reads and discards: it costs the service nothing,
    and this process's CPU, which the figures leave out."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Discard)
        self.address = f"127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc) -> None:
        self.shutdown()
        self.server_close()


class _Discard(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while self.request.recv(65536):
            pass


def serve(
    variant: Variant, python: Path, projects: Projects, workdir: Path, workers: int,
    sentry_dsn: str, otlp_endpoint: str = "", syslog_address: str = "",
) -> Gunicorn:  # fmt: skip
    """The variant started under gunicorn with `workers` sync workers; the same endpoint
    answers for all. `otlp_endpoint`, `syslog_address`: the receivers of the variants that
    export spans, ship log lines."""
    output = workdir / f"{variant.name}.out"
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint} if variant.otlp else {}
    if variant.plain_app:
        arguments = ["--workers", str(workers), variant.plain_app]
        server = Gunicorn(
            python, arguments, workdir, output, [APPS_DIR], ready_path=variant.endpoint,
            **exporting,
        )  # fmt: skip
        return server.start(timeout=STARTUP_SECONDS)
    project = projects.get(variant)
    # Every run starts with an empty log file: one run's lines must not rotate in the next.
    shutil.rmtree(project / "logs", ignore_errors=True)
    settings = {
        # Our own folder: gunicorn.conf.py would otherwise make one in /tmp per start.
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"{variant.name}-metrics"),
        **({"SENTRY_DSN": sentry_dsn} if variant.sentry else {}),
        **exporting,
        **({"LOG_SYSLOG_ADDRESS": syslog_address} if variant.syslog else {}),
        **({"BENCH_PACKAGE": package_name(project)} if variant.app else {}),
        **dict(variant.env),
    }
    server = BakedService(
        python, project, output, workers, app=variant.app, pythonpath=[APPS_DIR],
        ready_path=variant.endpoint, **settings,
    )  # fmt: skip
    return server.start(timeout=STARTUP_SECONDS)


def measure(server: Gunicorn, endpoint: str, options) -> dict:
    """One wrk run after a warm-up; the CPU the service spent on it, and what others took."""
    url = server.url + endpoint
    run_wrk(url, options.warmup, options.connections)
    before = _cpu_seconds(server)
    result = run_wrk(url, options.duration, options.connections)
    spent = {name: seconds - before[name] for name, seconds in _cpu_seconds(server).items()}
    service = spent["master"] + spent["workers"]
    others = max(spent["machine"] - service - spent["own"], 0)
    per_request = 1e6 / max(result.requests, 1)
    return {
        "requests_per_second": result.requests_per_second,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "cpu_us_per_request": round(service * per_request),
        "master_cpu_us_per_request": round(spent["master"] * per_request),
        "failures": result.failures,
        # Cores busy with anything but the service, wrk and the envelope server: other
        # work on the machine lowers throughput and raises p99, CPU per request much less.
        "other_load_cores": round(others / options.duration, 2),
    }


def _cpu_seconds(server: Gunicorn) -> dict[str, float]:
    return {
        "master": master_cpu_seconds(server),
        "workers": workers_cpu_seconds(server),
        "own": own_cpu_seconds(),  # wrk and the envelope server
        "machine": machine_busy_seconds(),
    }


def run_throughput(python: Path, projects: Projects, workdir: Path, options) -> dict:
    """Every variant, round after round; even rounds go backwards, so drift hits all alike."""
    variants = [VARIANTS_BY_NAME[name] for name in options.variants]
    rounds = {variant.name: [] for variant in variants}
    with EnvelopeServer() as sentry, OtlpServer() as collector, SyslogReceiver() as syslog:
        for round_number in range(options.rounds):
            order = _side_by_side(variants)
            order = order if round_number % 2 == 0 else order[::-1]
            for variant in order:
                with serve(
                    variant, python, projects, workdir, options.workers, sentry.dsn,
                    collector.endpoint, syslog.address,
                ) as server:  # fmt: skip
                    rounds[variant.name].append(measure(server, variant.endpoint, options))
                _print_progress(variant, rounds[variant.name][-1])
        envelopes = sentry.envelopes
        otlp_exports = {"exports": collector.exports, "bytes": collector.bytes}
    return {
        "settings": _settings(options),
        "variants": {
            variant.name: {
                "description": variant.description,
                "rounds": rounds[variant.name],
                **_least_disturbed(rounds[variant.name]),
            }
            for variant in variants
        },
        "sentry_envelopes_received": envelopes,
        "otlp_exports_received": otlp_exports,
        "targets": check_targets(rounds),
    }


def _side_by_side(variants: list[Variant]) -> list[Variant]:
    """The variants in the order they run in a round: those that a target compares first, each
    next to the one it is compared with, then the others."""
    first = [variant for name in SIDE_BY_SIDE for variant in variants if variant.name == name]
    return first + [variant for variant in variants if variant.name not in SIDE_BY_SIDE]


def _print_progress(variant: Variant, figures: dict) -> None:
    print(
        f"  {variant.name:<14} {figures['requests_per_second']:>7.0f} req/s  "
        f"p99 {figures['p99_ms']:6.2f} ms  max {figures['max_ms']:7.2f} ms  "
        f"{figures['cpu_us_per_request']:>5} us CPU/req  "
        f"others {figures['other_load_cores']:.2f} cores",
        flush=True,
    )


def _settings(options) -> dict:
    return {
        "endpoint": ENDPOINT,
        "realistic_endpoint": REALISTIC_ENDPOINT,
        "workers": options.workers,
        "worker_class": "sync",
        "wrk_threads": 1,
        "connections": options.connections,
        "warmup_seconds": options.warmup,
        "seconds": options.duration,
        "rounds": options.rounds,
    }


def _least_disturbed(measurements: list[dict]) -> dict:
    """The round with the least CPU per request: other work only adds to it, whether it runs
    beside us (`others' cores`) or on the host of a virtual machine, which no process here
    sees, and which moved a variant by 15 % between two rounds of a run with no other work.
    Failures count over all rounds."""
    least = min(measurements, key=lambda measurement: measurement["cpu_us_per_request"])
    return least | {"failures": sum(m["failures"] for m in measurements)}


# Each target: (the variant, the one it is compared with), the figure whose ratio is taken, and
# the bound that ratio must keep.
TARGETS = {
    "full_cpu_vs_bare": (("full", "bare"), "cpu_us_per_request", "<= 2.0"),
    "full_p99_vs_bare": (("full", "bare"), "p99_ms", "<= 2.0"),
    "core_cpu_vs_bare": (("core", "bare"), "cpu_us_per_request", "<= 1.3"),
    "full_throughput_vs_bare_realistic": (
        ("full-realistic", "bare-realistic"),
        "requests_per_second",
        ">= 0.85",
    ),
    "full_cpu_vs_opentelemetry_full": (
        ("full", "opentelemetry-full"),
        "cpu_us_per_request",
        "< 1.0",
    ),
    "full_tracing_cpu_vs_opentelemetry_full": (
        ("full-tracing", "opentelemetry-full"),
        "cpu_us_per_request",
        "< 1.0",
    ),
}


# The order in which a round runs the variants that the targets compare: each next to its
# reference. A round of every variant takes minutes, over which this machine's speed drifted
# by up to 20 % (bare at 405 µs of CPU a request in one round and 466 in the next): the best
# rounds of two variants far apart in a round are no measure of their ratio.
SIDE_BY_SIDE = (
    "bare",
    "core",
    "full",
    "opentelemetry-full",
    "full-tracing",
    "full-realistic",
    "bare-realistic",
)


def check_targets(rounds: dict) -> dict:
    """The targets of the full stack (and of core) against the ceiling and against
    OpenTelemetry's own instrumentation: each ratio taken in every round, from two variants
    that ran one after the other (see SIDE_BY_SIDE), and judged on its median. A target whose
    variants did not run is left out."""
    targets = {}
    for name, ((variant, reference), figure, target) in TARGETS.items():
        if variant in rounds and reference in rounds:
            by_round = [
                round(one[figure] / other[figure], 3)
                for one, other in zip(rounds[variant], rounds[reference], strict=True)
            ]
            ratio = round(statistics.median(by_round), 3)
            targets[name] = {
                "value": ratio,
                "target": target,
                "met": _meets(ratio, target),
                "rounds": by_round,
            }
    return targets


def _meets(value: float, target: str) -> bool:
    comparison, bound = target.split()
    return {"<": value < float(bound), "<=": value <= float(bound), ">=": value >= float(bound)}[
        comparison
    ]
