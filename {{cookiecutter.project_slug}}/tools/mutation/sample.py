"""A random sample of mutmut's mutants of src/: an estimate of its score in an hour or so.

`make mutation` tests every mutant, which takes many hours the first time. `pick` prints the
names of a random sample of them, for `mutmut run`; `score` prints the share of the sample that
the tests killed, with its 95 % confidence interval, and the sample's survivors. The sample is
the same for the same seed, size and mutants (mutmut names a mutant by its function and number),
so `score` finds the names that `pick` printed, and a later run of the same sample compares.

    python tools/mutation/sample.py pick [--size 300] [--seed 1]
    python tools/mutation/sample.py score [--size 300] [--seed 1]
"""

import argparse
import json
import math
import random
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

META_FILES = "mutants/src/**/*.py.meta"  # mutmut's record of each file's mutants and verdicts
KILLED = {"killed", "timeout"}  # as tools/mutation/report.py counts them
NOT_TESTED = {"not checked", "check was interrupted by user"}
Z_95 = 1.96


def verdicts() -> dict[str, int | None]:
    """Every mutant of src/ and the exit code of its tests (None: not tested yet)."""
    exit_codes: dict[str, int | None] = {}
    for meta in sorted(Path().glob(META_FILES)):
        exit_codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return exit_codes


def sample(names: list[str], size: int, seed: int) -> list[str]:
    if size > len(names):
        sys.exit(f"--size {size}: src/ has only {len(names)} mutants")
    sampler = random.Random(seed)  # noqa: S311 - a sample to measure, not a secret
    return sorted(sampler.sample(sorted(names), size))


def wilson_interval(killed: int, tested: int) -> tuple[float, float]:
    """Wilson's 95 % interval of the share killed: unlike the normal approximation, it stays
    within 0..1 and holds near 100 %, where most scores are."""
    share = killed / tested
    spread = Z_95**2 / tested
    centre = (share + spread / 2) / (1 + spread)
    half_width = Z_95 * math.sqrt(share * (1 - share) / tested + spread / (4 * tested))
    half_width /= 1 + spread
    return centre - half_width, centre + half_width


def score(picked: dict[str, int | None]) -> int:
    statuses = {name: status_by_exit_code[code] for name, code in picked.items()}
    untested = sum(status in NOT_TESTED for status in statuses.values())
    if untested:
        print(f"{untested} of the {len(picked)} sampled mutants are not tested yet")
        return 1
    killed = sum(status in KILLED for status in statuses.values())
    low, high = wilson_interval(killed, len(picked))
    print(
        f"src/, a random sample of {len(picked)} mutants: {killed} killed, "
        f"{100 * killed / len(picked):.1f} % (95 % interval {100 * low:.1f} to {100 * high:.1f} %)"
    )
    for name, status in sorted(statuses.items()):
        if status not in KILLED:
            print(f"  {status:<10} {name}")
    print("`mutmut show <name>` shows a mutant as a diff")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pick", "score"])
    parser.add_argument("--size", type=int, default=300, help="mutants in the sample")
    parser.add_argument("--seed", type=int, default=1, help="another seed, another sample")
    arguments = parser.parse_args()
    exit_codes = verdicts()
    if not exit_codes:
        sys.exit("no mutants: run mutmut first (`mutmut run` makes them in mutants/)")
    names = sample(list(exit_codes), arguments.size, arguments.seed)
    if arguments.action == "pick":
        print("\n".join(names))
        return 0
    return score({name: exit_codes[name] for name in names})


if __name__ == "__main__":
    sys.exit(main())
