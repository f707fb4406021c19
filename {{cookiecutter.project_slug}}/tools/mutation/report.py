"""Prints the mutation scores of `make mutation`: src/ (mutmut), monitoring, and both together.

Reads mutants/mutmut-cicd-stats.json (written by `mutmut export-cicd-stats`) and
mutants/monitoring.json (written by `tools/mutation/monitoring.py --output`). A mutant counts
as killed when a test failed or ran past its time limit; "no tests" (no test reaches the
code) and "suspicious" count as not killed.
"""

import argparse
import json
import sys
from pathlib import Path

MUTANTS_DIR = Path("mutants")


def line(name: str, killed: int, total: int) -> str:
    score = 100 * killed / total if total else 100.0
    return f"  {name:<12} {killed:>5} of {total:>5} killed  {score:5.1f} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail-under", type=float, help="exit 1 if the overall score is lower")
    arguments = parser.parse_args()

    python = json.loads((MUTANTS_DIR / "mutmut-cicd-stats.json").read_text())
    monitoring_file = MUTANTS_DIR / "monitoring.json"
    monitoring = json.loads(monitoring_file.read_text()) if monitoring_file.exists() else None

    python_killed = python["killed"] + python["timeout"]
    killed, total = python_killed, python["total"]
    print("Mutation scores")
    print(line("src/", python_killed, python["total"]))
    not_killed = {
        key: python[key] for key in ("survived", "no_tests", "suspicious", "skipped") if python[key]
    }
    print("               not killed: " + (", ".join(f"{k} {v}" for k, v in not_killed.items())))
    if monitoring is not None:
        print(line("monitoring", monitoring["killed"], monitoring["total"]))
        killed += monitoring["killed"]
        total += monitoring["total"]
    print(line("overall", killed, total))
    print("Survivors: `mutmut results`, `mutmut show <name>`; monitoring: mutants/monitoring.json")
    score = 100 * killed / total if total else 100.0
    if arguments.fail_under is not None and score < arguments.fail_under:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
