"""Remove what the answers switched off, record the answers, lock, print the next steps.

Which files belong to which switch is written down once, in the component table
(_components in cookiecutter.json), which the hooks, the template's tests and the benchmarks
all read. Removing is idempotent: a path already gone is skipped, so the hook can run again safely.

uv.lock is written here, with uv when it is on PATH: the dependencies depend on the answers,
so no lock in the template could be right for every project. The project starts with the
lock of its own answers, to commit with it. Without uv, without the answered Python, or
offline, the project is made all the same, without uv.lock, and the next steps say how to make it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Folders that only hold optional parts: removed when nothing is left in them.
OPTIONAL_FOLDERS = ["monitoring", "docs"]
ANSWERS_FILE = ".cookiecutter.json"


def disabled_paths(answers: dict) -> list[str]:
    """The paths owned by the components switched off, from the component table."""
    return [
        path.format(package=answers["package_name"])
        for switch, component in answers["_components"].items()
        if not answers[switch]
        for path in component["owns"]
    ]


def remove_paths(project_dir: Path, relative_paths: list[str]) -> None:
    for relative_path in relative_paths:
        path = project_dir / relative_path
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_empty_folders(project_dir: Path, relative_paths: list[str]) -> None:
    for relative_path in relative_paths:
        folder = project_dir / relative_path
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def record_answers(project_dir: Path, context: dict) -> None:
    """Keep the answers as a replay file, with the template and the commit it was at.

    `cookiecutter --replay-file .cookiecutter.json <template>` makes the project again;
    `cruft link` or `cruft update` (see the template's README) bring template changes in.
    """
    answers = {
        key: value
        for key, value in context.items()
        if not key.startswith("_") or key in ("_template", "_commit")
    }
    commit = context.get("_commit") or template_commit(context.get("_repo_dir"))
    if commit:
        answers["_commit"] = commit
    text = json.dumps({"cookiecutter": answers}, indent=2, sort_keys=True) + "\n"
    (project_dir / ANSWERS_FILE).write_text(text, encoding="utf-8")


def template_commit(repo_dir: str | None) -> str | None:
    """The commit of the template's git checkout; None for a template that is not one."""
    if not repo_dir:
        return None
    try:
        top = _git(repo_dir, "rev-parse", "--show-toplevel")
        head = _git(repo_dir, "rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    # A template folder inside some other repository is not that repository's commit.
    return head if Path(top).resolve() == Path(repo_dir).resolve() else None


def _git(repo_dir: str, *arguments: str) -> str:
    command = ["git", "-C", repo_dir, *arguments]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


# TEMPLATE_UV_LOCK=0 bakes without locking (the template's tests, but where they mean to lock).
LOCK_SWITCH = "TEMPLATE_UV_LOCK"
LOCK_TIMEOUT = 300


def python_version_of(executable: str) -> str | None:
    """The X.Y version that an interpreter runs, None if it does not run (a pyenv shim may not)."""
    command = [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def find_python(version: str) -> str | None:
    """A working Python X.Y: pythonX.Y on PATH, the running one, or a pyenv build; None if none."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    pyenv_builds = sorted(
        pyenv_root.glob(f"versions/{version}.*/bin/python{version}"),
        key=lambda path: [int(n) for n in re.findall(r"\d+", path.parents[1].name)],
        reverse=True,
    )
    candidates = [shutil.which(f"python{version}"), sys.executable, *map(str, pyenv_builds)]
    for candidate in candidates:
        if candidate and python_version_of(candidate) == version:
            return candidate
    return None


def lock(project_dir: Path, version: str) -> str | None:
    """Write uv.lock with uv; None when written, else why not, in a few words."""
    if os.environ.get(LOCK_SWITCH) == "0":
        return f"{LOCK_SWITCH}=0"
    uv = shutil.which("uv")
    if not uv:
        return "uv is not installed here"
    python = find_python(version)
    if not python:
        return f"no Python {version} found here, which uv lock needs"
    # Packages come from the package index; a Python build is never downloaded at bake time.
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    command = [uv, "lock", "--quiet", "--python", python]
    try:
        result = subprocess.run(
            command, cwd=project_dir, env=env, capture_output=True, text=True, timeout=LOCK_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"uv lock failed: {error}"
    if result.returncode != 0:
        (project_dir / "uv.lock").unlink(missing_ok=True)
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        return "uv lock failed: " + " ".join(lines[:2])[:300] if lines else "uv lock failed"
    return None


def next_steps(answers: dict, not_locked: str | None = None) -> str:
    slug = answers["project_slug"]
    version = answers["python_version"]
    steps = [f"Created {slug}. Next steps:", f"  cd {slug}"]
    if not_locked:
        steps += [
            f"  uv.lock was not made ({not_locked}). Make it, then commit it with the project:",
            f"  uv lock --python {version}                # uv: pip install uv (docs.astral.sh/uv)",
        ]
    steps += [
        f"  uv sync --frozen --extra dev --python {version}   # uv.lock's versions, into .venv",
        f"  (without uv: python{version} -m venv .venv && .venv/bin/pip install -e '.[dev]')",
        "  .venv/bin/pytest                          # the service's own tests",
        "  .venv/bin/gunicorn -c gunicorn.conf.py    # serve on http://127.0.0.1:8000",
    ]
    if answers["use_docker"]:
        steps.append("  docker compose up --build                 # with its monitoring stack")
    return "\n".join(steps)


def main() -> int:
    context = json.loads({{cookiecutter | jsonify | tojson}})  # noqa: F821  rendered by cookiecutter
    project_dir = Path.cwd()
    remove_paths(project_dir, disabled_paths(context))
    remove_empty_folders(project_dir, OPTIONAL_FOLDERS)
    record_answers(project_dir, context)
    print(next_steps(context, lock(project_dir, context["python_version"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
