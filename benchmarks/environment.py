"""The benchmark's tools: one cached virtual environment, the template and baked projects."""

import json
import shutil
import subprocess
import tempfile
import tomllib
import venv
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = BENCHMARKS_DIR.parent
# The component table (see the template README, "Adding a component").
COMPONENTS = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())["_components"]
CACHE_DIR = BENCHMARKS_DIR / ".cache"
VENV_DIR = CACHE_DIR / "venv"
INSTALLED_MARKER = VENV_DIR / "benchmark-requirements.txt"

# The alternative users would pick. instrumentation-flask 0.66b1 pins the API and semantic
# conventions of SDK 1.45.1: the newer SDK 1.45.2 and exporter 0.66b2 cannot be installed with it.
OPENTELEMETRY = [
    "opentelemetry-sdk==1.45.1",
    "opentelemetry-exporter-otlp-proto-http==1.45.1",
    "opentelemetry-exporter-prometheus==0.66b1",
    "opentelemetry-instrumentation-flask==0.66b1",
    "opentelemetry-instrumentation-logging==0.66b1",
]
PROFILER = "py-spy==0.4.3"
# How long a service may take to answer after its start, on a machine busy with other work.
STARTUP_SECONDS = 60
# What a copy of the template leaves out: history, caches and this benchmark.
NOT_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "__pycache__", ".pytest_cache", ".ruff_cache", "benchmarks"
)


def venv_tool(name: str) -> Path:
    return VENV_DIR / "bin" / name


def ensure_venv(template: Path) -> Path:
    """The service's pinned dependencies, cookiecutter, OpenTelemetry and py-spy, installed once."""
    if not venv_tool("python").exists():
        venv.create(VENV_DIR, with_pip=True)
    if not venv_tool("cookiecutter").exists():
        pip_install([_template_dev_pin("cookiecutter")])
    requirements = [*_service_requirements(template), *OPENTELEMETRY, PROFILER]
    wanted = "\n".join(requirements) + "\n"
    if not INSTALLED_MARKER.exists() or INSTALLED_MARKER.read_text() != wanted:
        pip_install(requirements)
        INSTALLED_MARKER.write_text(wanted)
    return venv_tool("python")


def pip_install(requirements: list[str]) -> None:
    subprocess.run(
        [
            venv_tool("python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
        timeout=900,
    )


def _template_dev_pin(name: str) -> str:
    """The version the template's own tests use, from requirements-dev.txt."""
    for line in (TEMPLATE_DIR / "requirements-dev.txt").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.strip()
    raise LookupError(f"{name} is not pinned in requirements-dev.txt")


def _service_requirements(template: Path) -> list[str]:
    """Build, runtime and dev pins of the service with every component on."""
    with tempfile.TemporaryDirectory() as scratch:
        project = bake(template, {}, Path(scratch))
        pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    return [
        *pyproject["build-system"]["requires"],
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["dev"],
    ]


def bake(template: Path, answers: dict, output_dir: Path) -> Path:
    """Generate one project into an empty folder of its own; returns the project's path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            venv_tool("cookiecutter"),
            "--no-input",
            "-o",
            output_dir,
            template,
            *(f"{key}={value}" for key, value in answers.items()),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (project,) = output_dir.iterdir()
    return project


def package_name(project: Path) -> str:
    return json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]["package_name"]


def prepare_template(destination: Path, ref: str | None, patch: Path | None) -> Path:
    """The template to bake: the work tree, or a commit of it, with a proposed change applied."""
    if ref is None and patch is None:
        return TEMPLATE_DIR
    if ref is None:
        shutil.copytree(TEMPLATE_DIR, destination, ignore=NOT_TEMPLATE)
    else:
        _export_commit(ref, destination)
    if patch is not None:
        subprocess.run(["git", "apply", patch.resolve()], cwd=destination, check=True, timeout=60)
    return destination


def _export_commit(ref: str, destination: Path) -> None:
    destination.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", TEMPLATE_DIR, "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", destination], input=archive.stdout, check=True, timeout=60)
