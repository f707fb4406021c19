"""The figures as plain-text tables."""

SCRAPE_TARGET_MS = 25  # median /metrics scrape with the most workers and routes measured


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers, *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = [
        "  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def throughput_report(section: dict) -> str:
    variants = section["variants"]
    bare = variants["bare"]
    rows = [
        [
            name,
            figures["requests_per_second"],
            figures["requests_per_second"] / bare["requests_per_second"],
            figures["p50_ms"],
            figures["p99_ms"],
            figures["p99_ms"] / bare["p99_ms"],
            figures["max_ms"],
            figures["cpu_us_per_request"],
            figures["cpu_us_per_request"] / bare["cpu_us_per_request"],
            figures["master_cpu_us_per_request"],
            figures["other_load_cores"],
            figures["failures"],
        ]
        for name, figures in variants.items()
    ]
    settings = section["settings"]
    title = (
        f"Throughput: GET {settings['endpoint']}, {settings['workers']} {settings['worker_class']} "
        f"workers, wrk {settings['connections']} connections, {settings['seconds']} s after "
        f"{settings['warmup_seconds']} s warm-up; of {settings['rounds']} rounds, the one with the "
        "least CPU per request"
    )
    headers = [
        "variant",
        "req/s",
        "x bare",
        "p50 ms",
        "p99 ms",
        "p99 x bare",
        "max ms",
        "CPU us/req",
        "CPU x bare",
        "master us/req",
        "others' cores",
        "failed",
    ]
    legend = [f"  {name}: {figures['description']}" for name, figures in variants.items()]
    notes = (
        "  CPU us/req: master and workers, all threads. others' cores: CPU taken by other work on\n"
        "  the machine meanwhile; when it is high, trust CPU per request more than req/s and p99.\n"
        "  max ms: wrk keeps only a few requests open, so a stall of the service shows in the\n"
        "  maximum (and in req/s), hardly in p99."
    )
    return "\n".join(
        [title, table(headers, rows), *legend, notes, "", _targets(section["targets"])]
    )


def _targets(targets: dict) -> str:
    if not targets:
        return "Targets: none of them had its variants in this run."
    lines = [
        "Targets (ratios of CPU per request, p99 or req/s: the median of each round's ratio, its"
        " two variants run one after the other):"
    ]
    for name, target in targets.items():
        verdict = "met" if target["met"] else "MISSED"
        by_round = ", ".join(str(ratio) for ratio in target["rounds"])
        lines.append(
            f"  {name:<40} {target['value']:>6}  (target {target['target']}): {verdict};"
            f" round by round {by_round}"
        )
    return "\n".join(lines)


def scrape_report(rows: list[dict]) -> str:
    headers = [
        "workers",
        "routes hit",
        "workers with samples",
        "series",
        "bytes",
        "median ms",
        "max ms",
        "OpenMetrics median ms",
        "first scrapes median ms",
    ]
    keys = ["workers", "routes", "workers_with_samples", "series", "bytes", "median_ms", "max_ms",
            "openmetrics_median_ms", "first_median_ms"]  # fmt: skip
    busiest = max(rows, key=lambda row: (row["workers"], row["routes"]))
    # Both formats: Prometheus asks for OpenMetrics, people and older tools for plain text.
    slower = max(busiest["median_ms"], busiest["openmetrics_median_ms"])
    verdict = "met" if slower < SCRAPE_TARGET_MS else "MISSED"
    return (
        "/metrics scrapes (full service), after every worker has scraped in both formats; the\n"
        "first 20 scrapes after the load, in plain text, in the last column:\n"
        + table(headers, [[row[key] for key in keys] for row in rows])
        + f"\nTarget: median under {SCRAPE_TARGET_MS} ms with {busiest['workers']} workers and "
        f"{busiest['routes']} routes, in either format: {slower} ms, {verdict}"
    )


def churn_report(result: dict) -> str:
    fresh, after = result["fresh"], result["after"]
    counted = result["requests_counted"]
    exact = "yes" if result["totals_exact"] else "NO"
    return (
        f"Worker churn ({result['workers']} workers, --max-requests {result['max_requests']}, "
        f"{result['replacements']:,} replacements in {result['load_seconds']} s):\n"
        f"  files in PROMETHEUS_MULTIPROC_DIR: {fresh['files']} fresh, {after['files']} after\n"
        f"  /metrics median (max) of 20 scrapes: {fresh['scrape_median_ms']} "
        f"({fresh['scrape_max_ms']}) ms fresh, {after['scrape_median_ms']} "
        f"({after['scrape_max_ms']}) ms after\n"
        f"  totals exact: {exact} ({result['requests_sent']:,} requests sent, answered "
        f"{result['requests_answered']}; counted {counted['request_total']:,} by the request "
        f"counter, {counted['histogram_count']:,} by the histogram)"
    )


def log_faults_report(result: dict) -> str:
    lines = [f"stdout nobody reads ({result['workers']} workers, {result['requests']:,} requests "
             f"from {result['clients']} clients; latency median / p99 / max):"]  # fmt: skip
    for name, label in (("stdout_read", "stdout read "), ("stdout_stuck", "stdout stuck")):
        run = result[name]
        lines.append(
            f"  {label}: {run['latency_median_ms']} / {run['latency_p99_ms']} / "
            f"{run['latency_max_ms']} ms, {run['console_lines_dropped']:,} console lines dropped, "
            f"every access line in the log file: {_yes(run['file_has_every_access_line'])}"
        )
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def logs_report(result: dict) -> str:
    return (
        f"Log throughput through the master's sinks ({result['children']} forked workers, "
        f"{result['lines']:,} JSON lines, rotation {result['rotation']}):\n"
        f"  {result['lines_per_second']:,} lines/s ({result['seconds_to_write']} s to write all, "
        f"{result['seconds_to_send']} s for the workers to send), {result['log_files']} log files\n"
        f"  file: {result['file']['written']:,} written, {result['file']['lost']} lost, "
        f"{result['file']['duplicated']} duplicated; console: {result['console']['written']:,} "
        f"written, {result['console']['lost']} lost"
    )


def bake_report(result: dict) -> str:
    return (
        f"Template: bake {result['bake_seconds']} s (median of {result['bakes']}); cookiecutter "
        f"to a passing test suite {result['to_passing_suite_seconds']} s "
        f"(pytest {result['pytest_seconds']} s, {result['tests_passed']} passed, "
        f"dependencies already installed)"
    )


def profile_report(variant: str, summary: dict, raw_path: str) -> str:
    lines = [
        f"Profile of one {variant} worker ({summary['samples']} main-thread samples; "
        f"raw stacks in {raw_path}):",
        "  inclusive %  function",
    ]
    lines += [f"  {share:>10}  {name}" for name, share in summary["inclusive_percent"].items()]
    lines.append("  own %        function")
    lines += [f"  {share:>10}  {name}" for name, share in summary["own_percent"].items()]
    return "\n".join(lines)
