"""Mutation testing of the monitoring files, which no Python mutation tool can change.

Finds every threshold, factor, quantile, window, duration, label matcher, aggregation label,
boolean operator, comparison, job, receiver and alert name in the monitoring files by pattern
(nothing here lists a particular value), makes one mutant per change, and runs the tests that
read the monitoring files against each mutant: a mutant is killed when one of them fails.
The tests that killed the latest mutants of the same file run first, and the others only if
none of them fails.

Each mutant lives in a copy of the whole project in a temporary folder, so the tests see it
exactly as they would see the real file, and the project itself is never changed.

    python tools/mutation/monitoring.py [--jobs 2] [--list] [--output FILE] [--exclude GLOB]
"""

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

PROJECT_DIR = Path(__file__).resolve().parents[2]
# Every configuration file under monitoring/, but the unit tests of the rules (*_test.yml),
# which are tests, not targets, and the provisioning of the compose stack, which no unit test
# reads (the stack itself is tried by hand, see README.md).
TARGETS = ["monitoring/**/*.yml", "monitoring/**/*.yaml", "monitoring/**/*.json"]
NOT_TARGETS = ["*_test.yml", "*_test.yaml", "*/provisioning/*"]
NOT_COPIED = {".git", ".venv", "venv", "mutants", "__pycache__", ".pytest_cache", ".ruff_cache"}
TOOLS = ["promtool", "amtool"]
FAILURES_FILE = "mutant-tests.xml"  # pytest's report, in the mutant's copy of the project

DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
NUMBER = re.compile(r"(?<![\w.$])\d+(?:\.\d+)?(?![\w.])")
RANGE = re.compile(r"\[(\d+(?:ms|s|m|h|d|w|y))\]")
MATCHER = re.compile(r'(?P<label>\w+)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>[^"]*)"')
OTHER_OPERATOR = {"=": "!=", "!=": "=", "=~": "!~", "!~": "=~"}
BY_CLAUSE = re.compile(r"\b(?P<keyword>by|without)\s*\((?P<labels>[^)]*)\)")
BINARY = re.compile(r"(?<=\s)(?P<op>and|or|unless|>=|<=|==|!=|>|<)(?=\s)")
OTHER_BINARY = {
    "and": "or", "or": "and", "unless": "and",
    ">": "<", "<": ">", ">=": "<", "<=": ">", "==": "!=", "!=": "==",
}  # fmt: skip
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# YAML keys whose value is a name that something else refers to, and keys whose values are
# one of a few choices (a mutant swaps in another choice seen in the same file).
NAME_KEYS = {"alert", "record", "job_name", "metrics_path", "name"}
CHOICE_KEYS = {"severity", "receiver"}
LIST_KEYS = {"group_by", "equal"}
MATCHER_KEYS = {"matchers", "source_matchers", "target_matchers"}
YAML_KEY = re.compile(r"^(?P<indent>\s*(?:-\s+)?)(?P<key>\w+):\s*(?P<value>.*?)\s*$")


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the project
    line: int  # 1-based
    kind: str
    original: str  # the whole line before and after
    mutated: str

    def describe(self) -> str:
        before, after = self.original.strip(), self.mutated.strip()
        return f"{self.path}:{self.line} {self.kind}: {before!r} -> {after!r}"


def format_number(value: float) -> str:
    return f"{value:.10g}"


def number_changes(text: str) -> list[str]:
    value = float(text)
    if value == 0:
        return ["1"]
    return [format_number(value * 2), format_number(value / 2)]


def duration_changes(text: str) -> list[str]:
    number, unit = DURATION.match(text).groups()
    seconds = int(number) * SECONDS[unit]
    changes = [f"{int(number) * 2}{unit}"]
    half = seconds / 2
    if int(number) % 2 == 0:
        changes.append(f"{int(number) // 2}{unit}")
    elif half >= 1 and half == int(half):
        changes.append(f"{int(half)}s")
    else:
        changes.append(f"{int(half * 1000)}ms")
    return changes


def masked(text: str) -> str:
    """The text with quoted strings, label sets and range windows blanked out, same length."""
    blank = lambda match: " " * len(match.group())  # noqa: E731
    text = re.sub(r'"(?:[^"\\]|\\.)*"', blank, text)
    text = re.sub(r"\{[^{}]*\}", blank, text)
    return re.sub(r"\[[^\]]*\]", blank, text)


def replace(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def promql_changes(expr: str, choices: dict[str, set[str]]) -> Iterator[tuple[str, str]]:
    """(kind, mutated expression) for each change of one PromQL expression (or fragment)."""
    plain = masked(expr)
    for match in NUMBER.finditer(plain):
        for new in number_changes(match.group()):
            yield "number", replace(expr, match.start(), match.end(), new)
    for match in BINARY.finditer(plain):
        new = OTHER_BINARY[match.group("op")]
        yield "operator", replace(expr, match.start(), match.end(), new)
    for match in RANGE.finditer(expr):
        for new in duration_changes(match.group(1)):
            yield "window", replace(expr, match.start(1), match.end(1), new)
    for match in BY_CLAUSE.finditer(plain):
        start, end = match.span("labels")
        labels = [label.strip() for label in expr[start:end].split(",")]
        if len(labels) == 1:  # drop the clause: aggregate everything together
            yield "aggregation label", replace(expr, match.start(), match.end(), "")
            continue
        for dropped in labels:
            kept = ", ".join(label for label in labels if label != dropped)
            yield "aggregation label", replace(expr, start, end, kept)
    for match in MATCHER.finditer(expr):
        op, value = match.group("op"), match.group("value")
        yield "matcher operator", replace(expr, *match.span("op"), OTHER_OPERATOR[op])
        others = sorted(choices.get(match.group("label"), set()) - {value})
        new = others[0] if others else value + "x"
        yield "matcher value", replace(expr, match.start("value"), match.end("value"), new)


def matcher_choices(text: str) -> dict[str, set[str]]:
    choices: dict[str, set[str]] = {}
    for match in MATCHER.finditer(text.replace('\\"', '"')):
        choices.setdefault(match.group("label"), set()).add(match.group("value"))
    return {label: values for label, values in choices.items() if len(values) > 1}


def yaml_mutants(path: str, text: str) -> Iterator[Mutant]:
    lines = text.splitlines(keepends=True)
    choices = matcher_choices(text)
    values_by_key: dict[str, set[str]] = {}
    for line in lines:
        if (match := YAML_KEY.match(line)) and match.group("key") in CHOICE_KEYS:
            values_by_key.setdefault(match.group("key"), set()).add(match.group("value"))
    in_block_expr = None  # indentation of the `expr: |` that the following lines belong to

    def mutant(number: int, kind: str, new_line: str) -> Mutant:
        return Mutant(path, number + 1, kind, lines[number], new_line)

    for number, line in enumerate(lines):
        stripped = line.strip()
        if in_block_expr is not None:
            if stripped and len(line) - len(line.lstrip()) > in_block_expr:
                for kind, new in promql_changes(line, choices):
                    yield mutant(number, kind, new)
                continue
            in_block_expr = None
        if not stripped or stripped.startswith("#"):
            continue
        match = YAML_KEY.match(line)
        if not match:
            continue
        key, value = match.group("key"), match.group("value")
        start, end = match.start("value"), match.end("value")
        if key == "expr" and value in ("|", "|-", ">", ">-"):
            in_block_expr = len(line) - len(line.lstrip())
        elif key == "expr" or key in MATCHER_KEYS:
            for kind, new in promql_changes(value, choices):
                yield mutant(number, kind, replace(line, start, end, new))
        elif DURATION.match(value):
            for new in duration_changes(value):
                yield mutant(number, "duration", replace(line, start, end, new))
        elif key in CHOICE_KEYS:
            for other in sorted(values_by_key[key] - {value})[:1]:
                yield mutant(number, "choice", replace(line, start, end, other))
        elif key in NAME_KEYS and value:
            name = value.strip("\"'")
            name_start = line.index(name, start)
            new = replace(line, name_start, name_start + len(name), name + "x")
            yield mutant(number, "name", new)
        elif key in LIST_KEYS and value.startswith("["):
            items = [item.strip() for item in value.strip("[]").split(",")]
            for dropped in items:
                kept = "[" + ", ".join(item for item in items if item != dropped) + "]"
                yield mutant(number, "list item", replace(line, start, end, kept))


def json_mutants(path: str, text: str) -> Iterator[Mutant]:
    """JSON panels: the PromQL of each query, legend labels, and threshold values."""
    lines = text.splitlines(keepends=True)
    choices = matcher_choices(text)
    for number, line in enumerate(lines):
        match = re.match(r'^(\s*"(\w+)":\s*)("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)(,?\s*)$', line)
        if not match:
            continue
        prefix, key, raw, suffix = match.groups()

        def mutant(kind: str, value: object, prefix=prefix, suffix=suffix, number=number) -> Mutant:
            new_line = prefix + json.dumps(value, ensure_ascii=False) + suffix
            return Mutant(path, number + 1, kind, lines[number], new_line)

        if key == "expr":
            for kind, new in promql_changes(json.loads(raw), choices):
                yield mutant(kind, new)
        elif key == "legendFormat":
            legend = json.loads(raw)
            for label in LEGEND_LABEL.finditer(legend):
                yield mutant("legend label", replace(legend, *label.span(1), label.group(1) + "x"))
        elif key == "value" and not raw.startswith('"') and is_threshold_step(lines, number):
            for new in number_changes(raw):
                yield mutant("threshold", json.loads(new))


def is_threshold_step(lines: list[str], number: int) -> bool:
    """A "value" next to a "color": one step of a panel's thresholds."""
    return '"color"' in "".join(lines[max(number - 2, 0) : number + 3])


def all_mutants(project: Path) -> list[Mutant]:
    mutants = []
    files = {file for pattern in TARGETS for file in project.glob(pattern)}
    for file in sorted(files):
        path = file.relative_to(project).as_posix()
        if any(fnmatch.fnmatch(path, pattern) for pattern in NOT_TARGETS):
            continue
        finder = json_mutants if file.suffix == ".json" else yaml_mutants
        mutants.extend(m for m in finder(path, file.read_text()) if m.mutated != m.original)
    return mutants


def tests_of(path: str, excluded: list[str]) -> list[str]:
    """The test modules that name the file (or else its folder, for files found by a glob),
    themselves or through the modules of tests/ they import."""
    texts = {module.stem: module.read_text() for module in (PROJECT_DIR / "tests").glob("*.py")}
    readers: set[str] = set()
    for name in (Path(path).name, f'"{Path(path).parent.name}"'):
        readers = {stem for stem, text in texts.items() if name in text}
        if readers:
            break
    while True:
        importing = {
            stem
            for stem, text in texts.items()
            if any(re.search(rf"^from \.{reader} import", text, re.MULTILINE) for reader in readers)
        }
        if importing <= readers:
            break
        readers |= importing
    # The live tests (the real servers) last: the first failure ends a mutant's run (-x),
    # and most mutants fail a quicker test first.
    modules = sorted(
        (f"tests/{stem}.py" for stem in readers if stem.startswith("test_")),
        key=lambda module: (module.endswith("_live.py"), module),
    )
    return [m for m in modules if not any(fnmatch.fnmatch(m, pattern) for pattern in excluded)]


def copy_project(destination: Path) -> Path:
    copy = destination / PROJECT_DIR.name
    shutil.copytree(PROJECT_DIR, copy, ignore=lambda _, names: NOT_COPIED.intersection(names))
    return copy


def run_tests(project: Path, tests: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(project / "src")}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junit-xml={project / FAILURES_FILE}", *tests]  # fmt: skip
    return subprocess.run(  # noqa: S603 (our own interpreter running pytest)
        command, cwd=project, env=environment, capture_output=True, text=True, timeout=600
    )


def failed_tests(project: Path) -> list[str]:
    """The ids of the tests that failed in the last run_tests (module-level tests)."""
    report = ElementTree.parse(project / FAILURES_FILE)  # noqa: S314 (pytest's own report)
    return [
        f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        for case in report.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]


class RecentKillers:
    """The tests that killed the latest mutants of each file. A mutant of the next lines is
    most often killed by one of them: tried first, they spare the run of every other test."""

    def __init__(self, keep: int = 3) -> None:
        self._keep = keep
        self._by_path: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def of(self, path: str) -> list[str]:
        with self._lock:
            return list(self._by_path.get(path, []))

    def add(self, path: str, tests: list[str]) -> None:
        with self._lock:
            recent = self._by_path.setdefault(path, [])
            for test in tests:
                if test in recent:
                    recent.remove(test)
                recent.insert(0, test)
            del recent[self._keep :]


def is_killed(mutant: Mutant, tests: list[str], killers: RecentKillers) -> bool:
    if not tests:
        return False
    with tempfile.TemporaryDirectory(prefix="monitoring-mutant-") as folder:
        project = copy_project(Path(folder))
        file = project / mutant.path
        lines = file.read_text().splitlines(keepends=True)
        if lines[mutant.line - 1] != mutant.original:
            raise RuntimeError(f"{mutant.path} changed while mutating it: {mutant.describe()}")
        lines[mutant.line - 1] = mutant.mutated
        file.write_text("".join(lines))
        for selected in (killers.of(mutant.path), tests):
            if selected and run_tests(project, selected).returncode != 0:
                killers.add(mutant.path, failed_tests(project))
                return True
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (2)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--fail-under", type=float, help="exit 1 below this score (percent)")
    parser.add_argument("--output", type=Path, help="also write the result to this JSON file")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out these test modules, e.g. 'tests/*_live.py' (a quicker lower bound)",
    )
    parser.add_argument(
        "--survivors-of",
        type=Path,
        metavar="JSON",
        help="test only the survivors listed in this earlier --output file",
    )
    arguments = parser.parse_args()

    if arguments.output:  # no stale result from an earlier run
        arguments.output.unlink(missing_ok=True)
    mutants = all_mutants(PROJECT_DIR)
    if arguments.survivors_of:
        earlier = set(json.loads(arguments.survivors_of.read_text())["survived"])
        mutants = [mutant for mutant in mutants if mutant.describe() in earlier]
    if arguments.list:
        for mutant in mutants:
            print(mutant.describe())
        print(f"{len(mutants)} mutants")
        return 0
    if not mutants:
        print("No monitoring files to mutate.")
        return 0
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:  # the tests would skip, and every mutant would survive
        print(f"Needs {' and '.join(missing)} (README.md says how to install them).")
        return 2
    paths = sorted({mutant.path for mutant in mutants})
    tests = {path: tests_of(path, arguments.exclude) for path in paths}
    every_test = sorted({test for modules in tests.values() for test in modules})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="monitoring-baseline-") as folder:
        baseline = run_tests(copy_project(Path(folder)), every_test)
    if baseline.returncode != 0:
        print(baseline.stdout + baseline.stderr)
        print("The tests fail without any mutant: fix them first.")
        return 2
    if re.search(r"\b\d+ skipped\b", baseline.stdout):  # every mutant would survive them
        print("\n".join(line for line in baseline.stdout.splitlines() if "SKIP" in line))
        print("Some of these tests skip here: install what they need (README.md), or exclude them.")
        return 2
    print(f"{len(mutants)} mutants of the monitoring files, each tested by the tests that read it:")
    for path, modules in tests.items():
        print(f"  {path}: {' '.join(modules) or 'no test reads it'}")

    survivors = []
    with ThreadPoolExecutor(max_workers=arguments.jobs) as pool:
        killers = RecentKillers()
        verdicts = pool.map(lambda mutant: is_killed(mutant, tests[mutant.path], killers), mutants)
        try:
            for mutant, killed in zip(mutants, verdicts, strict=True):
                print(f"{'killed  ' if killed else 'SURVIVED'} {mutant.describe()}", flush=True)
                if not killed:
                    survivors.append(mutant)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    killed = len(mutants) - len(survivors)
    score = 100 * killed / len(mutants)
    minutes = (time.monotonic() - started) / 60
    print(f"\nMonitoring: {killed} of {len(mutants)} mutants killed ({score:.1f} %)", end="")
    print(f" in {minutes:.1f} min")
    for mutant in survivors:
        print(f"  survived: {mutant.describe()}")
    if arguments.output:
        survived = [mutant.describe() for mutant in survivors]
        result = {"killed": killed, "total": len(mutants), "survived": survived}
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    if arguments.fail_under is not None and score < arguments.fail_under:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
