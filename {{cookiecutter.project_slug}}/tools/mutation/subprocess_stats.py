"""Lets mutmut see the code that the tests run in subprocesses (gunicorn, the dev server).

mutmut picks the tests to run against a mutant from the functions each test reached while it
collected its stats. It records those calls in its own process only: a function reached only
under gunicorn (the log relay, the worker hooks, a worker's metrics) would have no test, and
a function reached both ways would get only its in-process tests.

This one file plays two parts:

- a pytest plugin (`-p tools.mutation.subprocess_stats` in `[tool.mutmut]`). In mutmut's
  stats run it copies itself to `mutants/src/sitecustomize.py`, which every subprocess the
  tests start with `PYTHONPATH=<project>/src` imports, and at the end of the run it adds what
  the subprocesses recorded to mutmut's table of tests by function. In the other runs it
  puts the fastest tests first: mutmut stops at the first failure (`-x`);
- that `sitecustomize` module: in a subprocess started during the stats run, it writes
  "test id, function" for each mutated function the subprocess calls. A child that a test
  forks from its own process (os.fork) does the same.

While mutants run, the subprocesses need no help: they inherit MUTANT_UNDER_TEST from the
test process, and the mutated code in `mutants/src` reads it.
"""

import os
import shutil
from pathlib import Path

HITS_DIR_VARIABLE = "MUTMUT_SUBPROCESS_HITS"
# Phases of mutmut that run tests in an order of their own: collecting stats, checking that
# a failure is seen ("fail"). The clean run ("") and each mutant's run use ours.
OWN_ORDER = {"stats", "fail", "list_all_tests", "mutant_generation"}


def _mutant_under_test() -> str:
    return os.environ.get("MUTANT_UNDER_TEST", "")


def _record_hits_of_this_process(hits_dir: str) -> None:
    from mutmut.mutation import trampoline

    seen: set[tuple[str, str]] = set()

    def record_trampoline_hit(name: str, caller: str | None = None) -> None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rpartition(" (")[0]
        if not test or (test, name) in seen:
            return
        seen.add((test, name))
        # One small append per new pair, at once: workers are often killed, not stopped.
        with open(Path(hits_dir) / f"{os.getpid()}.hits", "a") as hits:
            hits.write(f"{test}\t{name}\n")

    trampoline.record_trampoline_hit = record_trampoline_hit


in_a_subprocess_of_the_stats_run = __name__ == "sitecustomize" and _mutant_under_test() == "stats"
if in_a_subprocess_of_the_stats_run and os.environ.get(HITS_DIR_VARIABLE):
    _record_hits_of_this_process(os.environ[HITS_DIR_VARIABLE])


def _record_hits_of_a_forked_child() -> None:
    if _mutant_under_test() == "stats" and os.environ.get(HITS_DIR_VARIABLE):
        _record_hits_of_this_process(os.environ[HITS_DIR_VARIABLE])


def pytest_configure(config) -> None:
    if _mutant_under_test() != "stats":
        return
    hits_dir = Path("subprocess-hits").resolve()  # mutmut runs the tests in mutants/
    shutil.rmtree(hits_dir, ignore_errors=True)
    hits_dir.mkdir()
    os.environ[HITS_DIR_VARIABLE] = str(hits_dir)
    shutil.copyfile(__file__, Path("src") / "sitecustomize.py")
    # Tests that fork (a worker made with os.fork) run mutated code in a child that imports
    # nothing anew: record its calls from the fork on.
    os.register_at_fork(after_in_child=_record_hits_of_a_forked_child)


def pytest_collection_modifyitems(session, config, items) -> None:
    """Fastest tests first, as measured in the stats run.

    mutmut stops at a mutant's first failing test, so a killed mutant costs little; and the
    clean run, which must pass, checks that the tests pass in this order too.
    """
    if _mutant_under_test() in OWN_ORDER:
        return
    from mutmut.state import state

    duration = state().duration_by_test
    items.sort(key=lambda item: duration.get(item.nodeid, float("inf")))


def pytest_sessionfinish(session) -> None:
    if _mutant_under_test() != "stats":
        return
    from mutmut.state import state

    tests_by_function = state().tests_by_mangled_function_name
    for hits in Path(os.environ[HITS_DIR_VARIABLE]).glob("*.hits"):
        for line in hits.read_text().splitlines():
            test, _, function = line.partition("\t")
            tests_by_function[function].add(test)
