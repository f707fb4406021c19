"""A project made with cruft takes in template changes later, and keeps its own choices."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TEMPLATE_DIR

CRUFT = Path(sys.executable).with_name("cruft")
GIT_IDENTITY = ["-c", "user.name=Template Tests", "-c", "user.email=tests@example.com"]


def git(folder: Path, *arguments: str) -> str:
    command = ["git", "-C", str(folder), *GIT_IDENTITY, *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def cruft(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CRUFT), *arguments], cwd=folder, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.fixture
def template_repository(tmp_path) -> Path:
    """The template as it is now, committed in a repository of its own."""
    repository = tmp_path / "template"
    tracked = git(TEMPLATE_DIR, "ls-files", "--cached", "--others", "--exclude-standard")
    for relative in tracked.splitlines():
        source = TEMPLATE_DIR / relative
        if source.is_file():
            (repository / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repository / relative)
    git(repository, "init", "--quiet")
    git(repository, "add", "--all")
    git(repository, "commit", "--quiet", "--message", "template")
    return repository


def test_cruft_update_brings_template_changes_and_keeps_removed_files_removed(
    template_repository, tmp_path
):
    created = cruft(tmp_path, "create", "--no-input", str(template_repository))
    assert created.returncode == 0, created.stderr
    project = tmp_path / "my-service"
    assert git(template_repository, "rev-parse", "HEAD") in (project / ".cruft.json").read_text()
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", "service")
    git(project, "rm", "--quiet", "Dockerfile")  # the team runs it without Docker
    git(project, "commit", "--quiet", "--message", "no Docker")

    makefile = template_repository / "{{cookiecutter.project_slug}}" / "Makefile"
    makefile.write_text(makefile.read_text() + "\n# A change made in the template later.\n")
    git(template_repository, "commit", "--quiet", "--all", "--message", "template change")
    assert cruft(project, "check").returncode != 0, "cruft must see the project is behind"

    updated = cruft(project, "update", "--skip-apply-ask", "--allow-untracked-files")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert (project / "Makefile").read_text().endswith("# A change made in the template later.\n")
    assert not (project / "Dockerfile").exists()
    assert cruft(project, "check").returncode == 0
