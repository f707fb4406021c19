"""Every supported combination bakes into a clean, linted project whose own tests pass."""

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from cookiecutter.main import cookiecutter

from .conftest import COMPONENTS, SUPPORTED, TEMPLATE_DIR, bake, unrendered_jinja

COMBINATIONS = [pytest.param(name, id=name) for name in SUPPORTED]
# The live monitoring tests (a real Prometheus and Alertmanager, about 40 s) depend only on the
# monitoring files and the names: they run where those differ, not in every combination.
LIVE_MONITORING_COMBINATIONS = {"all-defaults", "custom-names", "no-dashboard"}
LIVE_MONITORING_TESTS = ["tests/test_monitoring_live.py", "tests/test_dashboard_live.py"]
# promtool's unit tests of the alert rules (about 30 s of CPU) read only these two files: a
# combination whose copies are all-defaults' would repeat all-defaults' run. (--deselect takes
# this prefix of the tests' ids, one for each scenario.)
RULE_UNIT_TEST = "tests/test_alerts.py::test_every_rule_passes_its_unit_tests"
RULE_FILES = ["monitoring/prometheus/alerts.yml", "monitoring/prometheus/alerts_test.yml"]
# Combinations that switch off only what their service and its tests never read: all their
# other files are all-defaults' (test_the_service_and_tests_are_those_of_all_defaults), so
# their own suite would be all-defaults' run again, minus the tests of what they leave out.
SAME_SERVICE_AS_ALL_DEFAULTS = {"no-github-actions", "no-kubernetes"}
# What may differ in those: documents and tooling that no test reads.
NOT_READ_BY_THE_SERVICE = {".cookiecutter.json", ".dockerignore", "Makefile", "README.md"}
# What every test of a project runs and reads: its code, the tests' helpers and what they read,
# its dependencies and settings. In a combination where all of that is all-defaults', a test
# module that is all-defaults' too, and reads the same files, would repeat all-defaults' run:
# it is left out of the combination's suite.
SHARED_INPUTS = ["src", "gunicorn.conf.py", "pyproject.toml", ".env.example"]
READ_PATH = re.compile(r'PROJECT_DIR((?:\s*/\s*"[^"]+")+)')
TEST_MODULE_IMPORT = re.compile(r"^from \.(test_\w+) import", re.MULTILINE)
TEST_MODULE = re.compile(r"tests/test_\w+\.py")
DOCUMENTED_VARIABLE = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=", re.MULTILINE)  # as conftest reads
# Variables of .env.example that only compose.yaml reads (the local stack's Grafana login).
FOR_THE_LOCAL_STACK = {"GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD"}
# What installing and running a project adds to its folder, made from what is compared.
BUILD_ARTIFACT = re.compile(r"(^|/)(__pycache__|build|[^/]+\.egg-info)/")


@pytest.mark.parametrize("name", COMBINATIONS)
def test_no_unrendered_template_syntax(baked, name):
    project = baked(name)
    leftovers = {
        str(path.relative_to(project.path)): found
        for path, text in project.text_files().items()
        if (found := unrendered_jinja(text))
    }
    assert leftovers == {}


@pytest.mark.parametrize("name", COMBINATIONS)
def test_disabled_components_leave_no_trace(baked, name):
    project = baked(name)
    disabled = [switch for switch in COMPONENTS if not project.answers[switch]]
    for switch in disabled:
        for path in COMPONENTS[switch]["owns"]:
            assert not project.has_file(path.format(package=project.package)), path
    # The answers file names every switch, so it is skipped.
    traces = {
        f"{path.relative_to(project.path)}: {switch}"
        for switch in disabled
        if (words := COMPONENTS[switch].get("words"))
        for path, text in project.text_files().items()
        if path.name != ".cookiecutter.json" and re.search(words, text, re.IGNORECASE)
    }
    assert traces == set()


@pytest.mark.parametrize("name", COMBINATIONS)
def test_lint_clean(baked, name):
    """ruff, mypy --strict and yamllint with the project's settings: the Jinja-removed code
    changes types, and the answers reach the YAML."""
    project = baked(name)
    linters = (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"],
               ["yamllint", "--strict", "."])  # fmt: skip
    for command in linters:
        result = project.run(project.tool(command[0]), *command[1:])
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", COMBINATIONS)
def test_mutation_testing_copies_every_file_the_tests_read(baked, name):
    """mutmut runs the tests in a copy of the project: a file they read that it leaves out
    fails its first step, and with it the whole run."""
    project = baked(name)
    mutmut = tomllib.loads((project.path / "pyproject.toml").read_text())["tool"]["mutmut"]
    copied = {*mutmut["source_paths"], *mutmut["also_copy"], "tests"}
    read = {
        top_level
        for test_file in (project.path / "tests").glob("*.py")
        for top_level in re.findall(r'PROJECT_DIR / "([^"]+)"', test_file.read_text())
    }
    assert read and read - copied == set()
    assert [path for path in copied if not (project.path / path).exists()] == []


@pytest.mark.parametrize("name", sorted(SAME_SERVICE_AS_ALL_DEFAULTS))
def test_the_service_and_tests_are_those_of_all_defaults(cookies, name):
    # Fresh bakes: the shared ones gather what installing and testing them leaves behind.
    project = bake(cookies, SUPPORTED[name]).project_path
    defaults = bake(cookies, SUPPORTED["all-defaults"]).project_path
    differing = []
    for path in sorted(path for path in project.rglob("*") if path.is_file()):
        relative = path.relative_to(project)
        twin = defaults / relative
        if str(relative) in NOT_READ_BY_THE_SERVICE:
            continue
        if relative.name == "pyproject.toml":  # comments may differ, not the settings
            same = settings(path, project) == settings(twin, project)
        else:
            same = twin.is_file() and twin.read_bytes() == path.read_bytes()
        if not same:
            differing.append(str(relative))
    assert differing == []


def settings(pyproject: Path, project: Path) -> dict:
    """The settings of a pyproject.toml; mypy's files only those that `project` has, and
    without what mutmut copies, which follows what the tests read (a test of its own)."""
    found = tomllib.loads(pyproject.read_text())
    mypy = found["tool"]["mypy"]
    mypy["files"] = [name for name in mypy["files"] if (project / name).exists()]
    del found["tool"]["mutmut"]["also_copy"]
    return found


@pytest.mark.long
@pytest.mark.parametrize(
    "name", [param for param in COMBINATIONS if param.id not in SAME_SERVICE_AS_ALL_DEFAULTS]
)
def test_installs_and_its_own_test_suite_passes(baked, name):
    project = baked(name)
    install = project.install()
    assert install.returncode == 0, install.stderr
    skipped = [] if name in LIVE_MONITORING_COMBINATIONS else LIVE_MONITORING_TESTS
    if name != "all-defaults":
        skipped += repeated_test_modules(project, baked("all-defaults"))
    repeated = name != "all-defaults" and same_rules(project, baked("all-defaults"))
    deselected = [RULE_UNIT_TEST] if repeated else []
    # Without PYTHONPATH, the tests import the installed distribution.
    result = project.run(
        str(project.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
        *(f"--ignore={path}" for path in skipped),
        *(f"--deselect={test}" for test in deselected), timeout=1800, PYTHONPATH="",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)


def repeated_test_modules(project, reference) -> list[str]:
    """The test modules of `project` whose run would be `reference`'s run again (SHARED_INPUTS)."""
    in_tests = expanded(project, reference, ["tests"])
    test_modules = {path for path in in_tests if TEST_MODULE.fullmatch(path)}
    helpers = in_tests - test_modules
    read = {
        found
        for helper in helpers
        if helper.endswith(".py") and (project.path / helper).is_file()
        for found in files_read(project.path / helper)
    }
    # The test modules are compared one by one, below.
    shared = expanded(project, reference, [*SHARED_INPUTS, *helpers, *read]) - test_modules
    if any(differs(project, reference, path, as_read=True) for path in shared):
        return []
    return [
        str(module.relative_to(project.path))
        for module in sorted((project.path / "tests").glob("test_*.py"))
        if not any(
            differs(project, reference, path, as_read=False)
            for path in expanded(project, reference, module_inputs(module))
        )
    ]


def test_a_combination_leaves_out_only_the_tests_that_would_repeat_all_defaults(baked):
    defaults = baked("all-defaults")
    # text-logs changes a default of settings.py, which every test runs.
    assert repeated_test_modules(baked("text-logs"), defaults) == []
    # no-dashboard changes only documents and configurations; the runbook and .env.example are
    # read by test_alerts and test_settings.
    left_out = repeated_test_modules(baked("no-dashboard"), defaults)
    assert "tests/test_metrics.py" in left_out
    assert "tests/test_monitoring_live.py" in left_out
    assert {"tests/test_alerts.py", "tests/test_settings.py"}.isdisjoint(left_out)


def module_inputs(module: Path) -> set[str]:
    """The test module, the test modules it imports, and the files they read, relative to
    the project."""
    inputs, pending = set(), [module]
    while pending:
        current = pending.pop()
        relative = f"tests/{current.name}"
        if relative in inputs:
            continue
        inputs |= {relative, *files_read(current)}
        text = current.read_text()
        pending += [module.parent / f"{name}.py" for name in TEST_MODULE_IMPORT.findall(text)]
    return inputs


def files_read(module: Path) -> set[str]:
    """The paths a test file names from the project's folder: PROJECT_DIR / "a" / "b"."""
    return {
        "/".join(re.findall(r'"([^"]+)"', chain)) for chain in READ_PATH.findall(module.read_text())
    }


def expanded(project, reference, paths: list[str] | set[str]) -> set[str]:
    """Every file of the paths in either project, a folder's files included (not what an
    install or a run adds); a path that neither has stays, to be found missing."""
    files = set()
    for path in paths:
        found = {
            str(item.relative_to(root))
            for root in (project.path, reference.path)
            if (root / path).is_dir()
            for item in (root / path).rglob("*")
            if item.is_file()
        }
        files |= found or {path}
    return {path for path in files if not BUILD_ARTIFACT.search(path)}


def differs(project, reference, relative: str, as_read: bool) -> bool:
    """Whether a file of `project` differs from `reference`'s, byte for byte, or (as_read) as
    the tests' helpers and the service read it: YAML parsed, pyproject.toml's settings, and
    .env.example's variables (conftest clears them from the tests' environment)."""
    mine, theirs = project.path / relative, reference.path / relative
    if not (mine.is_file() and theirs.is_file()):
        return mine.is_file() != theirs.is_file()
    if mine.read_bytes() == theirs.read_bytes():
        return False
    if not as_read:
        return True
    if relative.endswith((".yml", ".yaml")):
        return yaml.safe_load(mine.read_text()) != yaml.safe_load(theirs.read_text())
    if relative == "pyproject.toml":
        return settings(mine, project.path) != settings(theirs, project.path)
    if relative == ".env.example":
        return variables_the_tests_clear(mine) != variables_the_tests_clear(theirs)
    return True


def variables_the_tests_clear(env_example: Path) -> set[str]:
    return set(DOCUMENTED_VARIABLE.findall(env_example.read_text())) - FOR_THE_LOCAL_STACK


def same_rules(project, reference) -> bool:
    """Whether `project` has `reference`'s alert rules and their unit tests, byte for byte
    once its job name is `reference`'s: to promtool a job name is an opaque label value."""
    job, reference_job = project.answers["project_slug"], reference.answers["project_slug"]
    return all(
        (project.path / path).is_file()
        and (project.path / path).read_text().replace(job, reference_job)
        == (reference.path / path).read_text()
        for path in RULE_FILES
    )


def test_the_projects_tests_have_the_same_ids_in_every_process(baked):
    """pytest-xdist and mutmut name the tests that another process is to run by their ids: an
    id made of a random value (a token) is no test there."""
    project = baked("all-defaults")

    def collected() -> list[str]:
        result = project.run(
            str(project.python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return [line for line in result.stdout.splitlines() if "::" in line]

    first = collected()
    assert first and collected() == first


def test_the_installed_default_project_knows_its_release(baked):
    project = baked("all-defaults")
    install = project.install()
    assert install.returncode == 0, install.stderr
    # One write: the service's console writer, a thread, may write its lines between two.
    check = project.run(
        str(project.python), "-c",
        "from my_service.app import create_app; from my_service.settings import load_settings;"
        "print(f'{create_app().name} {load_settings().app_release}')",
        PYTHONPATH="",
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "my_service.app my-service@0.1.0" in check.stdout


def test_answers_are_recorded_for_replay(cookies_session, tmp_path):
    original = bake(cookies_session, SUPPORTED["custom-names"]).project_path
    answers_file = original / ".cookiecutter.json"
    recorded = json.loads(answers_file.read_text())["cookiecutter"]
    assert recorded["project_name"] == "Billing API"
    assert recorded["package_name"] == "billing"
    assert not any(key.startswith("_") and key not in ("_template", "_commit") for key in recorded)
    head = ["git", "-C", str(TEMPLATE_DIR), "rev-parse", "HEAD"]
    assert recorded["_commit"] == subprocess.check_output(head, text=True).strip()

    replayed = Path(
        cookiecutter(recorded["_template"], replay=str(answers_file), output_dir=str(tmp_path))
    )
    assert file_contents(replayed) == file_contents(original)


def file_contents(folder: Path) -> dict:
    return {
        path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }
