"""Answers that cannot make a working project stop in the pre-generation hook."""

import re
import subprocess
import sys

import pytest
from cookiecutter.exceptions import FailedHookException

from .conftest import TEMPLATE_DIR, bake

REFUSED = {
    "dashboard-without-metrics": {"use_prometheus": "no", "use_grafana": "yes"},
    "kubernetes-without-image": {"use_docker": "no", "use_kubernetes": "yes"},
    "slug-with-spaces": {"project_slug": "my service"},
    "slug-uppercase": {"project_slug": "MyService"},
    "package-keyword": {"package_name": "class"},
    "package-shadows-dependency": {"package_name": "flask"},
    "package-shadows-stdlib": {"package_name": "logging"},
    "package-with-dash": {"package_name": "my-service"},
    "bad-email": {"author_email": "not-an-address"},
    "bad-version": {"version": "one"},
    "bad-rotation": {"log_rotation": "whenever"},
    "bad-retention": {"log_retention_days": "0"},
    "slo-target-too-low": {"slo_availability_target": "90"},
    "error-ratio-as-percent": {"alert_error_ratio_threshold": "5"},
    "latency-not-a-number": {"alert_latency_p99_seconds": "one second"},
    "description-on-two-lines": {"description": "first line\nsecond line"},
    "author-with-a-tab": {"author_name": "Ada\tLovelace"},
    "name-with-a-control-character": {"project_name": "Bell\x07 Service"},
}
# Values outside a choice list or a yes/no: cookiecutter itself refuses them, saying why.
REFUSED_BY_COOKIECUTTER = {
    "not-yes-or-no": {"use_docker": "maybe"},
    "unknown-python": {"python_version": "2.7"},
    "unknown-compression": {"log_compression": "rar"},
}


@pytest.mark.parametrize("answers", [pytest.param(a, id=name) for name, a in REFUSED.items()])
def test_refused_before_anything_is_generated(cookies, answers, tmp_path):
    result = bake(cookies, answers)
    assert isinstance(result.exception, FailedHookException), result.exception
    assert list(tmp_path.rglob("pyproject.toml")) == [], "nothing may be generated"


@pytest.mark.parametrize(
    "answers", [pytest.param(a, id=name) for name, a in REFUSED_BY_COOKIECUTTER.items()]
)
def test_values_cookiecutter_cannot_read_are_refused(cookies, answers, tmp_path):
    result = bake(cookies, answers)
    assert isinstance(result.exception, ValueError)
    assert f"{next(iter(answers.values()))} provided for" in str(result.exception)
    assert list(tmp_path.rglob("pyproject.toml")) == []


def test_the_reason_is_one_line_naming_the_answer(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path),
         str(TEMPLATE_DIR), "package_name=class"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [
        "ERROR: package_name 'class' is not a valid Python package name: use lowercase "
        "letters, digits and underscores, not starting with a digit, not a keyword"
    ]
    # cookiecutter prints its own traceback after a failed hook; ours must raise nothing.
    assert not re.search(r'File ".*pre_gen_project|File "/tmp/tmp\w+\.py"', result.stderr)
    assert list(tmp_path.iterdir()) == []
