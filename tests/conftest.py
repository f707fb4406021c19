"""Shared helpers for the template's tests: baked projects and one virtual environment."""

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.envelopes import EnvelopeProcess
from harness.loopback import LoopbackProcess

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TEMPLATE_DIR))  # so that tests can import hooks.*
# Bakes do not lock (uv lock, in the post-generation hook), but where a test switches it on.
os.environ.setdefault("TEMPLATE_UV_LOCK", "0")

# The component table: each switch, the paths only it owns, what it needs, and the words
# that betray it. The hooks, these tests and the benchmarks read it; cookiecutter.json holds it.
COMPONENTS = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())["_components"]
# Every switch off: the least a baked service runs (logging and request ids stay).
MINIMAL = {**{switch: "no" for switch in COMPONENTS}, "log_format": "text"}
# Named combinations of answers that must all produce a working service.
SUPPORTED = {
    "all-defaults": {},
    "minimal": MINIMAL,
    "no-sentry": {"use_sentry": "no"},
    "no-metrics": {"use_prometheus": "no", "use_grafana": "no"},
    "no-dashboard": {"use_grafana": "no"},
    "no-tracing": {"use_opentelemetry": "no"},
    "no-security": {"use_security_monitoring": "no"},
    "no-docker": {"use_docker": "no", "use_kubernetes": "no"},
    "no-kubernetes": {"use_kubernetes": "no"},
    "no-github-actions": {"use_github_actions": "no"},
    "text-logs": {"log_format": "text"},
    "no-file-logging": {"file_logging": "no"},
    "time-rotation": {"log_rotation": "00:00", "log_retention_days": "3", "log_compression": "zip"},
    "custom-names": {"project_name": "Billing API", "package_name": "billing"},
    "long-names": {"project_name": "Customer Account Reconciliation And Settlement Service"},
}  # fmt: skip


@dataclass
class Project:
    """A baked project and the commands one runs in it."""

    path: Path
    answers: dict
    python: Path

    @property
    def package(self) -> str:
        return self.answers["package_name"]

    def files(self) -> list[Path]:
        return sorted(path for path in self.path.rglob("*") if path.is_file())

    def has_file(self, relative: str) -> bool:
        return (self.path / relative).exists()

    def text_files(self) -> dict[Path, str]:
        texts = {}
        for path in self.files():
            try:
                texts[path] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
        return texts

    def run(self, *command: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=self.path,
            env={**os.environ, "PYTHONPATH": str(self.path / "src"), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def install(self) -> subprocess.CompletedProcess:
        """pip install the project into the shared environment, whose dependencies it has."""
        return self.run(
            str(self.python), "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "--disable-pip-version-check", ".",
        )  # fmt: skip

    def tool(self, name: str) -> str:
        return str(self.python.parent / name)


def bake(cookies, extra_context: dict):
    return cookies.bake(extra_context=extra_context, template=str(TEMPLATE_DIR))


def unrendered_jinja(text: str) -> list[str]:
    return re.findall(r"\{[{%]-?\s*(?:cookiecutter|endif|if |raw|endraw)[^}]*[}%]\}", text)


def pytest_collection_modifyitems(items):
    """xdist hands the tests out in this order: the minutes-long ones go first, so that no
    worker starts one while the other is running out of tests."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session")
def service_python(tmp_path_factory, cookies_session) -> Path:
    """One environment with every dependency of the full service, shared by all projects.

    Projects run from their `src` folder (PYTHONPATH), so that baking eleven variants
    costs one install; the all-defaults test still installs its project with pip.
    """
    result = bake(cookies_session, {})
    assert result.exit_code == 0, result.exception
    pyproject = tomllib.loads((result.project_path / "pyproject.toml").read_text())
    requirements = [
        *pyproject["build-system"]["requires"],
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["dev"],
        *pyproject["project"]["optional-dependencies"]["mutation"],  # for its tools' tests
        "requests",
    ]
    environment = tmp_path_factory.mktemp("service-venv")
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        check=True,
        timeout=600,
    )
    return python


@pytest.fixture(scope="session")
def baked(cookies_session, service_python):
    """Bake a named supported combination once per session."""
    projects = {}

    def get(name: str) -> Project:
        if name not in projects:
            result = bake(cookies_session, SUPPORTED[name])
            assert result.exit_code == 0, f"{name}: {result.exception}"
            projects[name] = Project(result.project_path, result.context, service_python)
        return projects[name]

    return get


@pytest.fixture
def envelopes(tmp_path):
    """Start stand-ins for sentry.io; stop_leftover_servers stops them by pid after the test."""

    def start(hang: bool = False) -> EnvelopeProcess:
        return EnvelopeProcess(tmp_path, hang).start()

    return start


@pytest.fixture(autouse=True)
def stop_leftover_servers():
    """A test that fails before stopping its servers must not leave them running; servers
    of wider-scoped fixtures, started before this fixture, stay for the next tests."""
    already_running = set(LoopbackProcess.running)
    yield
    for server in LoopbackProcess.running - already_running:
        server.stop()
