"""Unit tests of the hook helpers, without baking."""

import json

import pytest

from hooks.post_gen_project import (
    OPTIONAL_FOLDERS,
    disabled_paths,
    find_python,
    lock,
    next_steps,
    record_answers,
    remove_empty_folders,
    remove_paths,
)
from hooks.pre_gen_project import CHOICES, problems_with

from .conftest import COMPONENTS, TEMPLATE_DIR

DEFAULTS = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())


def answers(**changes) -> dict:
    values = {
        **DEFAULTS,
        "project_slug": "my-service",
        "package_name": "my_service",
        "python_version": "3.11",
        "log_format": "json",
        "log_compression": "gz",
    }
    return {**values, **changes}


def test_default_answers_have_no_problems():
    assert problems_with(answers()) == []


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"project_name": "  "}, "project_name"),
        ({"project_slug": "x" * 64}, "project_slug"),
        ({"project_slug": "double--dash"}, "project_slug"),
        ({"package_name": "2fast"}, "package_name"),
        ({"package_name": "json"}, "package_name"),
        ({"package_name": "sentry_sdk"}, "package_name"),
        ({"author_email": "a@b"}, "author_email"),
        ({"version": "v1"}, "version"),
        ({"log_rotation": "50 parsecs"}, "log_rotation"),
        ({"log_retention_days": "a week"}, "log_retention_days"),
        ({"use_sentry": "maybe"}, "use_sentry"),
        ({"use_grafana": True, "use_prometheus": False}, "use_grafana needs use_prometheus"),
        ({"slo_availability_target": "99.9%"}, "slo_availability_target"),
        ({"slo_availability_target": "90"}, "slo_availability_target"),
        ({"slo_availability_target": "100"}, "slo_availability_target"),
        ({"alert_error_ratio_threshold": "5%"}, "alert_error_ratio_threshold"),
        ({"alert_error_ratio_threshold": "0"}, "alert_error_ratio_threshold"),
        ({"alert_error_ratio_threshold": "1"}, "alert_error_ratio_threshold"),
        ({"alert_latency_p99_seconds": "0"}, "alert_latency_p99_seconds"),
        ({"alert_latency_p99_seconds": "1s"}, "alert_latency_p99_seconds"),
        ({"alert_latency_p99_seconds": "inf"}, "alert_latency_p99_seconds"),
    ],
)
def test_each_problem_names_the_answer_to_fix(changes, named):
    problems = problems_with(answers(**changes))
    assert len(problems) == 1
    assert problems[0].startswith(named)
    assert "\n" not in problems[0]


@pytest.mark.parametrize(
    "changes",
    [
        {"slo_availability_target": "93.1"},
        {"slo_availability_target": "99.999"},
        {"alert_error_ratio_threshold": "0.001"},
        {"alert_latency_p99_seconds": " 0.25 "},
    ],
)
def test_alerting_answers_at_the_edges_are_accepted(changes):
    assert problems_with(answers(**changes)) == []


def test_several_problems_are_all_reported():
    assert len(problems_with(answers(version="x", author_email="y"))) == 2


def test_all_switches_on_remove_nothing():
    assert disabled_paths(answers()) == []


def test_a_switch_off_removes_exactly_the_paths_its_component_owns():
    paths = disabled_paths(answers(use_sentry=False))
    assert paths == [path.format(package="my_service") for path in COMPONENTS["use_sentry"]["owns"]]


def test_the_hook_checks_the_choices_that_cookiecutter_json_offers():
    questions = {name: value for name, value in DEFAULTS.items() if not name.startswith("_")}
    offered = {name: tuple(value) for name, value in questions.items() if isinstance(value, list)}
    assert offered == CHOICES


def test_every_yes_or_no_question_is_a_switch_of_the_component_table():
    questions = {name for name, value in DEFAULTS.items() if isinstance(value, bool)}
    assert questions == set(COMPONENTS)


def test_removal_is_idempotent(tmp_path):
    (tmp_path / "monitoring" / "grafana").mkdir(parents=True)
    (tmp_path / "monitoring" / "grafana" / "board.json").write_text("{}")
    (tmp_path / "Dockerfile").write_text("FROM scratch")
    paths = ["monitoring/grafana", "Dockerfile", "compose.yaml"]
    for _ in range(2):
        remove_paths(tmp_path, paths)
        remove_empty_folders(tmp_path, OPTIONAL_FOLDERS)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_content_left_is_kept(tmp_path):
    (tmp_path / "monitoring" / "prometheus").mkdir(parents=True)
    remove_empty_folders(tmp_path, OPTIONAL_FOLDERS)
    assert (tmp_path / "monitoring" / "prometheus").is_dir()


def test_without_prometheus_the_runbook_and_its_folder_go(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "runbook.md").write_text("# Runbook")
    remove_paths(tmp_path, disabled_paths(answers(use_prometheus=False, use_grafana=False)))
    remove_empty_folders(tmp_path, OPTIONAL_FOLDERS)
    assert not (tmp_path / "docs").exists()


def test_answers_are_recorded_without_private_keys(tmp_path):
    context = {**answers(), "_template": "gh:org/template", "_output_dir": "/somewhere"}
    record_answers(tmp_path, context)
    recorded = json.loads((tmp_path / ".cookiecutter.json").read_text())["cookiecutter"]
    assert recorded["_template"] == "gh:org/template"
    assert "_output_dir" not in recorded
    assert "__prompts__" not in recorded
    assert recorded["project_slug"] == "my-service"


def test_next_steps_mention_docker_only_when_it_is_there():
    assert "docker compose" in next_steps(answers(use_docker=True))
    assert "docker" not in next_steps(answers(use_docker=False))


@pytest.mark.parametrize("version", ["3.11", "3.13"])
def test_next_steps_use_the_answered_python(version):
    steps = next_steps(answers(python_version=version))
    assert f"uv sync --frozen --extra dev --python {version}" in steps
    assert f"python{version} -m venv .venv" in steps
    assert "python3 -m" not in steps
    assert "uv lock" not in steps


def test_next_steps_say_how_to_lock_when_the_hook_could_not():
    steps = next_steps(answers(python_version="3.12"), "uv is not installed here")
    assert "uv.lock was not made (uv is not installed here)" in steps
    assert "uv lock --python 3.12" in steps


def test_no_lock_without_uv(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATE_UV_LOCK", "1")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert lock(tmp_path, "3.11") == "uv is not installed here"
    assert not (tmp_path / "uv.lock").exists()


def test_no_python_found_for_a_version_that_does_not_exist():
    assert find_python("3.99") is None
