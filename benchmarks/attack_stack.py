"""Prometheus with a day of normal history, Alertmanager and a webhook, for the attack mix.

The baseline alerts compare the last minutes with the day before and stay silent without
3 hours of history. Waiting a day is not an option, so the rules are time-scaled (every
duration divided by one factor, `scale_rules`) and Prometheus starts on a synthetic history
of normal traffic: counters growing at the rates a warm-up of the normal clients measured,
with Poisson noise, written as OpenMetrics and turned into blocks by promtool. The
recording rules that read raw series alone are then backfilled from it by promtool, as
Prometheus would have recorded them; the rules built on those are evaluated live, over
that history. History and live scrape share their labels: the scrape sets `instance`.
"""

import json
import math
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.prometheus import LoopbackServer, Prometheus, require_binary

INTERVAL = "1s"  # scrapes and rule evaluations
INSTANCE = "service"  # the instance label of the history and of the live scrape
HISTORY_STEP_SECONDS = 2
# Between the end of the history and the first scrape: no rate window spans both, so the
# counter reset between them (the live counters start from the warm-up) reads as nothing.
HISTORY_GAP_SECONDS = 60

DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
DURATION_TEXT = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
SECONDS_OF_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# A range [5m], a subquery [1h:5m] or an offset in PromQL.
RANGE = re.compile(r"\[((?:\d+(?:ms|s|m|h|d|w|y))+)(?::((?:\d+(?:ms|s|m|h|d|w|y))+))?\]")
OFFSET = re.compile(r"\boffset\s+((?:\d+(?:ms|s|m|h|d|w|y))+)")
# A recorded series (level:metric:operations); not a subquery's "5m:1m", after a digit.
RECORDED_NAME = re.compile(r"(?<![\w.])[a-zA-Z_]\w*:[\w:]*")
METRIC_NAME = re.compile(r"(?<![\w.\"'])[a-zA-Z_]\w*")


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration such as 90s, 1h30m or 500ms."""
    if not DURATION_TEXT.fullmatch(text):
        raise ValueError(f"{text!r} is not a Prometheus duration")
    return sum(int(number) * SECONDS_OF_UNIT[unit] for number, unit in DURATION.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest exact Prometheus duration: whole seconds, or milliseconds."""
    milliseconds = round(seconds * 1000)
    if milliseconds <= 0:
        raise ValueError(f"{seconds} s is too short for a Prometheus duration")
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def scale_duration(text: str, factor: float) -> str:
    return format_duration(parse_duration(text) / factor)


def scale_expression(expression: str, factor: float) -> str:
    """Every range, subquery step and offset of a PromQL expression divided by `factor`."""

    def scaled_range(match: re.Match) -> str:
        window, step = match.group(1), match.group(2)
        scaled = scale_duration(window, factor)
        return f"[{scaled}:{scale_duration(step, factor)}]" if step else f"[{scaled}]"

    expression = RANGE.sub(scaled_range, expression)
    return OFFSET.sub(lambda match: f"offset {scale_duration(match.group(1), factor)}", expression)


def scale_rules(rules: dict, factor: float) -> dict:
    """A copy of a rules file (parsed) whose every duration is divided by `factor`."""
    scaled = json.loads(json.dumps(rules))
    for group in scaled["groups"]:
        if "interval" in group:
            group["interval"] = scale_duration(group["interval"], factor)
        for rule in group["rules"]:
            rule["expr"] = scale_expression(rule["expr"], factor)
            if "for" in rule:
                rule["for"] = scale_duration(rule["for"], factor)
    return scaled


def raw_recording_rules(rules: dict) -> dict:
    """The recording rules that read scraped series alone: those a history can be backfilled
    with before Prometheus starts (the others read what these record)."""
    groups = []
    for group in rules["groups"]:
        records = [
            rule
            for rule in group["rules"]
            if "record" in rule and not RECORDED_NAME.search(rule["expr"])
        ]
        if records:
            groups.append({"name": group["name"], "rules": records})
    return {"groups": groups}


def alert_names(rules: dict) -> set[str]:
    return {
        rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    }


def referenced_metrics(rules: dict) -> set[str]:
    """Names that the rules' expressions may read (a superset: functions and labels too)."""
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.update(METRIC_NAME.findall(rule["expr"]))
    return names


def longest_history_seconds(rules: dict) -> float:
    """How far back the rules look: the longest range plus offset of any expression."""
    longest = 0.0
    for group in rules["groups"]:
        for rule in group["rules"]:
            ranges = [parse_duration(window) for window, _ in RANGE.findall(rule["expr"])]
            offsets = [parse_duration(offset) for offset in OFFSET.findall(rule["expr"])]
            longest = max(longest, max(ranges, default=0) + max(offsets, default=0))
    return longest


# --- the scraped exposition -------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Series:
    name: str
    labels: tuple[tuple[str, str], ...]

    def without(self, label: str) -> "Series":
        return Series(self.name, tuple(pair for pair in self.labels if pair[0] != label))

    def text(self, extra: dict[str, str]) -> str:
        pairs = [*self.labels, *extra.items()]
        inner = ",".join(f'{key}="{value}"' for key, value in pairs)
        return f"{self.name}{{{inner}}}"


def parse_exposition(text: str) -> tuple[dict[Series, float], dict[str, str]]:
    """Samples by series, and the type of each family, from Prometheus' text format."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            types[family] = kind
        elif line and not line.startswith("#") and (match := SAMPLE.match(line)):
            name, labels, value = match.groups()
            samples[Series(name, tuple(LABEL.findall(labels or "")))] = float(value)
    return samples, types


def family_of(name: str, types: dict[str, str]) -> tuple[str, str]:
    for suffix in ("_bucket", "_count", "_sum", "_total", ""):
        family = name.removesuffix(suffix) if suffix else name
        if name.endswith(suffix) and family in types:
            return family, types[family]
    return name, "unknown"


# --- the synthetic history --------------------------------------------------------------


def poisson(mean: float, rng: random.Random) -> int:
    if mean <= 0:
        return 0
    if mean > 30:  # the normal approximation, close enough and quick
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


@dataclass
class NormalRates:
    """What the normal clients make of each series, per second, measured on the live service."""

    counters: dict[Series, float] = field(default_factory=dict)  # _total series
    histograms: dict[Series, dict] = field(default_factory=dict)  # by labels without le
    gauges: dict[Series, float] = field(default_factory=dict)  # last value, held


def measure_rates(before: str, after: str, seconds: float, wanted: set[str]) -> NormalRates:
    """The rates of the series of `wanted` families between two scrapes `seconds` apart."""
    first, _ = parse_exposition(before)
    last, types = parse_exposition(after)
    rates = NormalRates()
    for series, value in last.items():
        family, kind = family_of(series.name, types)
        if series.name not in wanted and family not in wanted:
            continue
        increase = max(0.0, value - first.get(series, 0.0))
        if kind == "counter":
            rates.counters[series] = increase / seconds
        elif kind == "histogram":
            base = Series(family, series.without("le").labels)
            histogram = rates.histograms.setdefault(base, {"buckets": {}, "count": 0, "sum": 0})
            if series.name.endswith("_bucket"):
                histogram["buckets"][dict(series.labels)["le"]] = increase
            else:
                histogram[series.name.rpartition("_")[2]] = increase
        elif kind == "gauge":
            rates.gauges[series] = value
    for histogram in rates.histograms.values():
        histogram["seconds"] = seconds
    return rates


def history_openmetrics(
    rates: NormalRates, labels: dict[str, str], start: float, end: float, rng: random.Random
) -> str:
    """OpenMetrics text of the normal traffic from `start` to `end`, one sample a step."""
    steps = [
        start + index * HISTORY_STEP_SECONDS
        for index in range(int((end - start) // HISTORY_STEP_SECONDS) + 1)
    ]
    lines = []
    by_name: dict[str, list[str]] = {}
    for series, rate in rates.counters.items():
        by_name.setdefault(series.name, []).extend(_counter_lines(series, rate, labels, steps, rng))
    for series, histogram in rates.histograms.items():
        for name, series_lines in _histogram_lines(series, histogram, labels, steps, rng).items():
            by_name.setdefault(name, []).extend(series_lines)
    for series, value in rates.gauges.items():
        by_name.setdefault(series.name, []).extend(
            f"{series.text(labels)} {value} {moment:.3f}" for moment in steps
        )
    for series_lines in by_name.values():  # each family's samples together, as OpenMetrics wants
        lines.extend(series_lines)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _counter_lines(series, rate, labels, steps, rng) -> list[str]:
    value, lines = 0, []
    for moment in steps:
        value += poisson(rate * HISTORY_STEP_SECONDS, rng)
        lines.append(f"{series.text(labels)} {value} {moment:.3f}")
    return lines


def _histogram_lines(series, histogram, labels, steps, rng) -> dict[str, list[str]]:
    """Observations drawn as often as measured, into the buckets in the measured shares."""
    bounds = sorted(histogram["buckets"], key=lambda le: math.inf if le == "+Inf" else float(le))
    cumulative = [histogram["buckets"][le] for le in bounds]
    shares = [high - low for low, high in zip([0.0, *cumulative], cumulative, strict=False)]
    rate = histogram["count"] / histogram["seconds"]
    mean = histogram["sum"] / histogram["count"] if histogram["count"] else 0.0
    counts = [0] * len(bounds)
    total, total_sum = 0, 0.0
    lines: dict[str, list[str]] = {
        f"{series.name}_{part}": [] for part in ("bucket", "count", "sum")
    }
    for moment in steps:
        observed = poisson(rate * HISTORY_STEP_SECONDS, rng)
        if observed and sum(shares) > 0:
            for index in rng.choices(range(len(bounds)), weights=shares, k=observed):
                for above in range(index, len(bounds)):
                    counts[above] += 1
        total += observed
        total_sum += observed * mean
        for le, count in zip(bounds, counts, strict=True):
            bucket = Series(f"{series.name}_bucket", (*series.labels, ("le", le)))
            lines[f"{series.name}_bucket"].append(f"{bucket.text(labels)} {count} {moment:.3f}")
        for part, value in (("count", total), ("sum", total_sum)):
            named = Series(f"{series.name}_{part}", series.labels)
            lines[f"{series.name}_{part}"].append(f"{named.text(labels)} {value} {moment:.3f}")
    return lines


def write_history(
    data_dir: Path,
    workdir: Path,
    rules: dict,
    rules_file: Path,
    openmetrics: str,
    start: float,
    end: float,
) -> None:
    """Blocks of the raw history, and of the recording rules that read it, in `data_dir`."""
    promtool = require_binary("promtool")
    source = workdir / "history.om"
    source.write_text(openmetrics)
    data_dir.mkdir(parents=True, exist_ok=True)
    _run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)])
    source.unlink()
    raw_rules = raw_recording_rules(rules)
    if not raw_rules["groups"]:
        return
    raw_rules_file = workdir / "raw_recording_rules.yml"
    raw_rules_file.write_text(yaml.safe_dump(raw_rules))
    reader = Prometheus(workdir / "history", {"global": {"scrape_interval": INTERVAL}})
    shutil.copytree(data_dir, reader.workdir / "data")
    with reader.start():
        recorded = workdir / "recorded"
        _run(
            [
                promtool,
                "tsdb",
                "create-blocks-from",
                "rules",
                f"--url={reader.url}",
                f"--start={int(start)}",
                f"--end={int(end)}",
                f"--output-dir={recorded}",
                f"--eval-interval={HISTORY_STEP_SECONDS}s",
                str(raw_rules_file),
            ]
        )
    for block in recorded.iterdir():
        shutil.move(block, data_dir / block.name)


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode:
        raise RuntimeError(f"{command[:4]} failed: {result.stderr[-2000:]}")


# --- Prometheus, Alertmanager and the webhook ---------------------------------------------


def prometheus_config(job: str, target: str, rules_file: Path, alertmanager: str) -> dict:
    return {
        "global": {
            "scrape_interval": INTERVAL,
            "scrape_timeout": INTERVAL,
            "evaluation_interval": INTERVAL,
        },
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        # The job the rules select; a fixed instance, which the history has too.
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [target]}],
                "relabel_configs": [{"target_label": "instance", "replacement": INSTANCE}],
            }
        ],
    }


class Alertmanager(LoopbackServer):
    """The project's alertmanager.yml, its receivers posting to `webhook` at once."""

    def __init__(self, workdir: Path, project_config: Path, webhook: "Webhook"):
        super().__init__(workdir, "alertmanager")
        config = yaml.safe_load(project_config.read_text())
        # group_interval 1s: an alert that resolves and fires again is told at once.
        config["route"].update(group_wait="1s", group_interval="1s")
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = webhook.url + urllib.parse.urlsplit(hook["url"]).path
        config_file = self.workdir / "alertmanager.yml"
        config_file.write_text(json.dumps(config, indent=2))
        self.command = [
            require_binary("prometheus-alertmanager"),
            f"--config.file={config_file}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # a single instance: no gossip port
        ]


@dataclass(frozen=True)
class Notified:
    received: float  # wall-clock seconds
    receiver: str
    status: str
    labels: dict
    starts_at: str


class Webhook:
    """Alertmanager's receiver, in a thread: every alert of every notification, timed."""

    def __init__(self) -> None:
        self.alerts: list[Notified] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.add(body, time.time())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_arguments) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, notification: dict, received: float) -> None:
        with self._lock:
            self.alerts.extend(
                Notified(
                    received,
                    notification["receiver"],
                    alert["status"],
                    alert["labels"],
                    alert["startsAt"],
                )
                for alert in notification["alerts"]
            )

    def firing(self) -> list[Notified]:
        with self._lock:
            return [alert for alert in self.alerts if alert.status == "firing"]

    def __enter__(self) -> "Webhook":
        self.thread.start()
        return self

    def __exit__(self, *_exception) -> None:
        self.server.shutdown()
        self.server.server_close()
