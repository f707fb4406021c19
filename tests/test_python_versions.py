"""Every offered Python version: the project is locked with uv at bake time, installs from its
lock with `make install` (uv sync --frozen) under that interpreter, and its own tests pass.

A version whose interpreter is missing here is skipped, with the reason; in the template's CI
TEMPLATE_REQUIRED_PYTHON names the version that must not be skipped.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hooks.post_gen_project import LOCK_SWITCH, find_python

from .conftest import TEMPLATE_DIR, bake
from .test_generation import LIVE_MONITORING_TESTS, RULE_UNIT_TEST

VERSIONS = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())["python_version"]
DEFAULT_VERSION = VERSIONS[0]
RUNNING_VERSION = "{}.{}".format(*sys.version_info)
PROJECT_TEMPLATE = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"


def uv_executable() -> str | None:
    """The uv of the template's environment (requirements-dev.txt), else the one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def pinned_uv_version(text: str) -> str | None:
    found = re.search(r"\buv==([\w.]+)", text)
    return found.group(1) if found else None


@pytest.fixture
def with_uv(monkeypatch):
    """uv on PATH for the hook and make, locking switched on, Python builds never downloaded."""
    uv = uv_executable()
    if not uv:
        pytest.skip("uv is not installed (pip install -r requirements-dev.txt)")
    monkeypatch.setenv("PATH", f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(LOCK_SWITCH, "1")
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")
    return uv


def interpreter(version: str) -> str:
    python = find_python(version)
    if python is None:
        reason = f"no working Python {version} here (python{version} on PATH, pyenv)"
        if version == os.environ.get("TEMPLATE_REQUIRED_PYTHON"):
            pytest.fail(reason + ", and TEMPLATE_REQUIRED_PYTHON requires it")
        pytest.skip(reason)
    return python


def run(project: Path, *command: str, timeout: int = 600, **env: str):
    # The template tests' own PYTHONPATH or virtual environment must not leak into the project.
    environment = {**os.environ, **env}
    environment.pop("PYTHONPATH", None)
    environment.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        command, cwd=project, env=environment, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.long
@pytest.mark.parametrize("version", VERSIONS)
def test_locked_install_and_own_tests_under_each_python(cookies, with_uv, version):
    python = interpreter(version)
    result = bake(cookies, {"python_version": version})
    assert result.exit_code == 0, result.exception
    project = result.project_path
    lock = project / "uv.lock"
    assert lock.exists(), "the hook wrote no uv.lock"
    assert f'requires-python = ">={version}"' in lock.read_text()

    check = run(project, with_uv, "lock", "--check", "--python", python)
    assert check.returncode == 0, check.stderr

    install = run(project, "make", "install", f"PYTHON={python}")
    assert install.returncode == 0, install.stdout + install.stderr
    assert "uv sync --frozen" in install.stdout
    venv_version = run(project, ".venv/bin/python", "-c", "import sys; print(sys.version)")
    assert venv_version.stdout.startswith(version + "."), venv_version.stdout

    lint = run(project, "make", "lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr

    if version == DEFAULT_VERSION == RUNNING_VERSION:
        # This is all-defaults, under the Python and with the pinned dependencies that
        # test_generation runs its suite with: the suite would repeat that run.
        imports = run(project, ".venv/bin/python", "-c", "import my_service.app")
        assert imports.returncode == 0, imports.stderr
        return
    # The monitoring tests run in test_generation; they do not depend on the version.
    ignored = " ".join(f"--ignore={path}" for path in LIVE_MONITORING_TESTS)
    tests = run(
        project, "make", "test", timeout=1800,
        PYTEST_ADDOPTS=f"-q -p no:cacheprovider {ignored} --deselect={RULE_UNIT_TEST}",
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert re.search(r"\d+ passed", tests.stdout)


def test_pip_install_without_uv_names_a_missing_interpreter(cookies):
    result = bake(cookies, {"python_version": "3.13", "use_docker": "no", "use_kubernetes": "no"})
    assert result.exit_code == 0, result.exception
    missing = run(result.project_path, "make", "install", "UV=", "PYTHON=python3.99-missing")
    assert missing.returncode != 0
    lines = [line for line in missing.stderr.splitlines() if line.startswith("make: '")]
    assert lines == [
        "make: 'python3.99-missing' is not a working Python 3.13 or newer: install Python 3.13"
        " (or uv), or name it: make install PYTHON=/path/to/python3.13"
    ]
    assert not (result.project_path / ".venv").exists()


def test_bake_without_a_reachable_index_succeeds_and_says_how_to_lock(
    cookies, with_uv, tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-uv-cache"))
    result = bake(cookies, {})
    assert result.exit_code == 0, result.exception
    assert not (result.project_path / "uv.lock").exists()
    printed = capfd.readouterr().out
    assert "uv.lock was not made (uv lock failed: " in printed
    assert "uv lock --python 3.11" in printed


def test_uv_is_pinned_to_one_version_everywhere():
    pins = {
        "requirements-dev.txt": pinned_uv_version(
            (TEMPLATE_DIR / "requirements-dev.txt").read_text()
        ),
        "Dockerfile": pinned_uv_version((PROJECT_TEMPLATE / "Dockerfile").read_text()),
        "ci.yml": pinned_uv_version((PROJECT_TEMPLATE / ".github/workflows/ci.yml").read_text()),
    }
    assert None not in pins.values(), pins
    assert len(set(pins.values())) == 1, pins
