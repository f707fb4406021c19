"""Check the answers before anything is generated.

Each problem is printed on one line that says what to change; when there is one, the
hook exits non-zero and cookiecutter generates nothing.
"""

import json
import keyword
import math
import re
import sys
import unicodedata

SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
# The same forms the generated settings accept for LOG_ROTATION.
_SIZE = r"\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)"
_INTERVAL = r"\d+(\.\d+)?\s*(seconds?|minutes?|hours?|days?|weeks?|months?)"
ROTATION = re.compile(rf"^({_SIZE}|{_INTERVAL}|([01]\d|2[0-3]):[0-5]\d)$", re.IGNORECASE)

# Import names the service depends on, or that tools treat specially: a package
# with one of these names would shadow it.
TAKEN_NAMES = {
    "app", "click", "flask", "gunicorn", "itsdangerous", "jinja2", "loguru", "markupsafe",
    "opentelemetry", "orjson", "prometheus_client", "prometheus_flask_exporter", "pydantic",
    "pydantic_core", "pydantic_settings", "sentry_sdk", "src", "test", "tests", "werkzeug",
}  # fmt: skip
CHOICES = {
    "python_version": ("3.11", "3.12", "3.13"),
    "log_format": ("json", "text"),
    "log_compression": ("gz", "zip", "none"),
}
# Free text that the filters of local_extensions.py escape for each file: one line each.
FREE_TEXT = ("project_name", "description", "author_name", "author_email")
MAX_SLUG_LENGTH = 63  # a DNS label: container, Kubernetes and Prometheus job names
# The fast burn-rate alert fires at 14.4 times the error budget: below 93.1 % that would
# need more than 100 % of requests to fail, and the alert could never fire.
SLO_TARGET_RANGE = (93.1, 99.999)


def problems_with(answers: dict) -> list[str]:
    """Every reason these answers cannot make a working project."""
    return [
        *_free_text_problems(answers),
        *_name_problems(answers),
        *_metadata_problems(answers),
        *_logging_problems(answers),
        *_switch_problems(answers),
        *_alerting_problems(answers),
    ]


def _free_text_problems(answers: dict) -> list[str]:
    return [
        f"{name} {answers[name]!r} holds a line break or another control character "
        f"(U+{ord(control):04X}): write it on one line"
        for name in FREE_TEXT
        if (control := _first_control_character(str(answers[name])))
    ]


def _first_control_character(text: str) -> str | None:
    return next((char for char in text if unicodedata.category(char) == "Cc"), None)


def _name_problems(answers: dict) -> list[str]:
    problems = []
    if not str(answers["project_name"]).strip():
        problems.append("project_name is empty: give the service a name")
    slug = answers["project_slug"]
    if not SLUG.match(slug) or len(slug) > MAX_SLUG_LENGTH:
        problems.append(
            f"project_slug {slug!r} is not valid: use lowercase letters, digits and single "
            f"dashes, starting with a letter, at most {MAX_SLUG_LENGTH} characters"
        )
    package = answers["package_name"]
    if not PACKAGE.match(package) or keyword.iskeyword(package):
        problems.append(
            f"package_name {package!r} is not a valid Python package name: use lowercase "
            "letters, digits and underscores, not starting with a digit, not a keyword"
        )
    elif package in TAKEN_NAMES or package in sys.stdlib_module_names:
        problems.append(
            f"package_name {package!r} would shadow the module of the same name: choose another"
        )
    return problems


def _metadata_problems(answers: dict) -> list[str]:
    problems = []
    if not EMAIL.match(answers["author_email"]):
        problems.append(f"author_email {answers['author_email']!r} is not an e-mail address")
    if not VERSION.match(answers["version"]):
        problems.append(f"version {answers['version']!r} is not a PEP 440 version such as 0.1.0")
    for name, allowed in CHOICES.items():
        if answers[name] not in allowed:
            problems.append(f"{name} {answers[name]!r} is not one of {', '.join(allowed)}")
    return problems


def _logging_problems(answers: dict) -> list[str]:
    problems = []
    if not ROTATION.match(str(answers["log_rotation"]).strip()):
        problems.append(
            f'log_rotation {answers["log_rotation"]!r} is not valid: use a size ("50 MB"), '
            'an interval ("1 day") or a daily time ("00:00")'
        )
    days = str(answers["log_retention_days"]).strip()
    if not days.isdigit() or not 1 <= int(days) <= 3650:
        problems.append(f"log_retention_days {days!r} is not a whole number of days (1 to 3650)")
    return problems


def _switch_problems(answers: dict) -> list[str]:
    """Each switch of the component table (_components in cookiecutter.json) is yes or no,
    and a component that is on has the components it needs."""
    components = answers["_components"]
    problems = [
        f"{switch} {answers[switch]!r} is not yes or no"
        for switch in components
        if not isinstance(answers[switch], bool)
    ]
    for switch, component in components.items():
        for needed, why in component.get("needs", {}).items():
            if answers[switch] is True and answers[needed] is not True:
                problems.append(
                    f"{switch} needs {needed}: {why} (answer yes to {needed}, or no to {switch})"
                )
    return problems


def _alerting_problems(answers: dict) -> list[str]:
    problems = []
    lowest, highest = SLO_TARGET_RANGE
    target = _finite_number(answers["slo_availability_target"])
    if target is None or not lowest <= target <= highest:
        problems.append(
            f"slo_availability_target {answers['slo_availability_target']!r} is not a percentage "
            f"from {lowest} to {highest} (99.9 allows one failed request in a thousand)"
        )
    ratio = _finite_number(answers["alert_error_ratio_threshold"])
    if ratio is None or not 0 < ratio < 1:
        problems.append(
            f"alert_error_ratio_threshold {answers['alert_error_ratio_threshold']!r} is not a "
            "share between 0 and 1 (0.05 alerts when more than 5 % of requests fail)"
        )
    latency = _finite_number(answers["alert_latency_p99_seconds"])
    if latency is None or latency <= 0:
        problems.append(
            f"alert_latency_p99_seconds {answers['alert_latency_p99_seconds']!r} is not a "
            "positive number of seconds"
        )
    return problems


def _finite_number(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def main() -> int:
    answers = json.loads({{cookiecutter | jsonify | tojson}})  # noqa: F821  rendered by cookiecutter
    problems = problems_with(answers)
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
