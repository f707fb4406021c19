"""Just enough PromQL reading to check queries against the series the service exports.

Not a parser: it finds the series a query reads, the labels its selectors match on and the
labels it aggregates by, which is what a renamed metric or label breaks without a sound.
"""

import re
from pathlib import Path

import yaml

from .conftest import PROJECT_DIR

ALERTS = PROJECT_DIR / "monitoring" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = PROJECT_DIR / "monitoring" / "prometheus" / "prometheus.yml"
# Labels Prometheus puts on every series it scrapes.
TARGET_LABELS = {"job", "instance"}
# Series Prometheus makes itself, with their labels (besides the target's).
PROMETHEUS_SERIES = {"up": set()}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}  # fmt: skip
# The routes that give every metric of the service a sample, errors and exceptions included.
SAMPLE_REQUESTS = ["/", "/api/items/1", "/api/items/5000", "/api/fail"]
STRING = re.compile(r'"(\\.|[^"\\])*"')
GROUPING = re.compile(r"\b(by|without)\s*\(([^)]*)\)")


def metric_names(expression: str) -> set[str]:
    """Names of the series a PromQL expression reads."""
    expression = STRING.sub('""', expression)  # label values
    expression = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expression)  # matchers, ranges
    expression = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                        expression)  # fmt: skip
    words = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expression)
    return {word for word in words if word.lower() not in PROMQL_WORDS}


def selector_labels(expression: str) -> list[tuple[str, set[str]]]:
    """(series name, labels its matchers name) for each `name{...}` of the expression."""
    expression = STRING.sub('""', expression)
    return [
        (name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)))
        for name, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expression)
    ]


def grouping_labels(expression: str) -> list[tuple[set[str], set[str]]]:
    """(labels, names of the series aggregated) for each `by (...)` or `without (...)`.

    The aggregated expression follows the clause (`sum by (x) (...)`) or precedes it
    (`sum(...) by (x)`).
    """
    expression = STRING.sub('""', expression)
    found = []
    for match in GROUPING.finditer(expression):
        labels = {label.strip() for label in match.group(2).split(",") if label.strip()}
        after = expression[match.end() :].lstrip()
        if after.startswith("("):
            argument = _balanced(after, 0)
        else:
            before = expression[: match.start()].rstrip()
            argument = _balanced(before[::-1], 0, opening=")", closing="(")[::-1]
        found.append((labels, metric_names(argument)))
    return found


def _balanced(text: str, start: int, opening: str = "(", closing: str = ")") -> str:
    depth = 0
    for index in range(start, len(text)):
        depth += {opening: 1, closing: -1}.get(text[index], 0)
        if depth == 0:
            return text[start : index + 1]
    raise ValueError(f"unbalanced parentheses: {text}")


def unknown_labels(expression: str, known: dict[str, set[str]]) -> list[str]:
    """Every label the expression matches on or groups by that its series do not have."""
    problems = [
        f"{name} with {label}"
        for name, labels in selector_labels(expression)
        if name in known
        for label in sorted(labels - known[name] - TARGET_LABELS)
    ]
    for labels, names in grouping_labels(expression):
        problems.extend(
            f"{name} by ({label})"
            for name in sorted(names & known.keys())
            for label in sorted(labels - known[name] - TARGET_LABELS)
        )
    return problems


def exported_labels(client) -> dict[str, set[str]]:
    """Each series name the service exports on /metrics, with the names of its labels."""
    for path in SAMPLE_REQUESTS:
        client.get(path)
    text = client.get("/metrics").get_data(as_text=True)
    labels: dict[str, set[str]] = {}
    for sample in text.splitlines():
        if sample and not sample.startswith("#"):
            name, _, rest = sample.partition("{")
            name = name.split(" ")[0]
            label_text = STRING.sub("", rest.rpartition("}")[0]) if rest else ""
            labels.setdefault(name, set()).update(re.findall(r"(\w+)=", label_text))
    return labels


def rules(path: Path = ALERTS) -> list[dict]:
    """Every recording and alerting rule of the file."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def recorded_labels(path: Path = ALERTS) -> dict[str, set[str]]:
    """The series the recording rules make, each with the labels its aggregation keeps, or
    without one, those of the recorded series it reads (a rule reads the ones before it)."""
    recorded: dict[str, set[str]] = {}
    for rule in rules(path):
        if "record" in rule:
            groupings = grouping_labels(rule["expr"])
            read = metric_names(rule["expr"])
            recorded[rule["record"]] = (
                {label for labels, _ in groupings for label in labels}
                if groupings
                else {label for name in read for label in recorded.get(name, set())}
            )
    return recorded


def known_series(client) -> dict[str, set[str]]:
    """Every series a query may read: exported, recorded or made by Prometheus."""
    return {**exported_labels(client), **recorded_labels(), **PROMETHEUS_SERIES}


def service_job() -> str:
    """The job name prometheus.yml scrapes the service under (the other job is Prometheus)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"] if job["job_name"] != "prometheus"]
    assert len(jobs) == 1, f"prometheus.yml scrapes {jobs}: which one is the service?"
    return jobs[0]


def series_of_the_job(name: str) -> str:
    """A selector of the series of that name from the service's job."""
    return name + '{job="' + service_job() + '"}'
