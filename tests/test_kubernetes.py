"""The Kubernetes manifests of generated projects, checked by the tools made for them.

What `deploy/kubernetes/render.py` prints (for the default project, and for one without
metrics) goes through:
- kubernetes-validate, strict: every core kind against the API schemas of Kubernetes releases;
- a JSON schema, written here, of the fields the Prometheus Operator's kinds use (its CRDs are
  not downloaded), and promtool on the PrometheusRule's rules;
- checkov, offline: no failed check; a skipped one says why, in the manifest it concerns.

kubernetes-validate (which bundles its schemas) and checkov come from PyPI, into a virtual
environment of their own that the first run makes in ~/.cache (about 400 MB; 3 minutes on the
development machine), since checkov's hundred dependencies have no place among the template's.
Without it (offline, say) the tests are skipped, except in CI.
"""

import fcntl
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from .conftest import SUPPORTED, bake
from .prometheus import require_binary

TOOLS = ["kubernetes-validate==1.37.0", "checkov==3.3.30", "jsonschema==4.26.0"]
CACHE = Path.home() / ".cache" / "observable-flask-template" / "kubernetes-tools-1"
# The newest release kubernetes-validate knows, and an older one that clusters still run.
KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
OPERATOR_API = "monitoring.coreos.com/v1"
# no-sentry: API_TOKEN the one setting from a Secret, with its own checkov skip.
COMBINATIONS = ["all-defaults", "no-metrics", "no-sentry"]


@pytest.fixture(scope="session")
def tools() -> Path:
    """The bin folder of the tools' environment, made once per machine."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install, whichever xdist worker comes first
        installed = CACHE / "installed.txt"
        if not installed.exists() or installed.read_text() != "\n".join(TOOLS):
            install_tools(CACHE / "venv")
            installed.write_text("\n".join(TOOLS))
    return CACHE / "venv" / "bin"


def install_tools(environment: Path) -> None:
    venv.create(environment, with_pip=True, clear=True)
    pip = [str(environment / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check", *TOOLS]  # fmt: skip
    result = subprocess.run(pip, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        message = f"cannot install {' '.join(TOOLS)}: {result.stderr[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module", params=COMBINATIONS)
def manifests(request, cookies_session) -> list[dict]:
    result = bake(cookies_session, SUPPORTED[request.param])
    assert result.exit_code == 0, result.exception
    return render(result.project_path)


def render(project: Path) -> list[dict]:
    script = project / "deploy" / "kubernetes" / "render.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def core(manifests: list[dict]) -> list[dict]:
    return [manifest for manifest in manifests if manifest["apiVersion"] != OPERATOR_API]


def of_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def write_stream(folder: Path, manifests: list[dict]) -> Path:
    path = folder / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    return path


# --- kubernetes-validate ------------------------------------------------------------------------


def kubernetes_validate(tools: Path, manifests: list[dict], folder: Path, version: str) -> str:
    """What kubernetes-validate finds wrong; empty when every core object is valid."""
    stream = write_stream(folder, core(manifests))
    command = [str(tools / "kubernetes-validate"), "--strict", "--quiet",
               "--kubernetes-version", version, str(stream)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return "" if result.returncode == 0 else result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_core_kinds_are_valid(tools, manifests, tmp_path, version):
    assert kubernetes_validate(tools, manifests, tmp_path, version) == ""


# --- the Prometheus Operator's kinds ----------------------------------------------------------

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
# The Operator's duration: 30s, 5m, 1h30m.
DURATION = {
    "type": "string",
    "pattern": r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$",
}


def operator_object(kind: str, spec: dict) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": OPERATOR_API},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": NAME,
                    "namespace": NAME,
                    "labels": STRINGS,
                    "annotations": STRINGS,
                },
            },
            "spec": spec,
        },
    }


SERVICE_MONITOR = operator_object("ServiceMonitor", {
    "type": "object",
    "required": ["selector", "endpoints"],
    "additionalProperties": False,
    "properties": {
        "jobLabel": {"type": "string"},
        "selector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"matchLabels": STRINGS},
        },
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["port"],
                "additionalProperties": False,
                "properties": {
                    "port": {"type": "string"},
                    "path": {"type": "string", "pattern": "^/"},
                    "interval": DURATION,
                    "scrapeTimeout": DURATION,
                    "scheme": {"enum": ["http", "https"]},
                },
            },
        },
    },
})  # fmt: skip

RULE = {
    "type": "object",
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "additionalProperties": False,
    "properties": {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRINGS,
        "annotations": STRINGS,
    },
}
PROMETHEUS_RULE = operator_object("PrometheusRule", {
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": DURATION,
                    "rules": {"type": "array", "items": RULE},
                },
            },
        },
    },
})  # fmt: skip
OPERATOR_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}

# Run by the tools' Python, which has jsonschema: (schema, object) pairs in, one line per error out.
VALIDATE_WITH_SCHEMAS = """
import json, sys
from jsonschema import Draft202012Validator
for schema, found in json.load(sys.stdin):
    for error in Draft202012Validator(schema).iter_errors(found):
        print(found["kind"], error.json_path, error.message)
"""


def operator_schema_errors(tools: Path, manifests: list[dict]) -> list[str]:
    pairs = [(OPERATOR_SCHEMAS[manifest["kind"]], manifest)
             for manifest in manifests if manifest["apiVersion"] == OPERATOR_API]  # fmt: skip
    command = [str(tools / "python"), "-c", VALIDATE_WITH_SCHEMAS]
    result = subprocess.run(command, input=json.dumps(pairs), capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_operator_s_kinds_are_valid(tools, manifests):
    assert operator_schema_errors(tools, manifests) == []


def promtool_findings(rules: dict, folder: Path) -> str:
    """What `promtool check rules` finds wrong; empty when the rules load."""
    path = folder / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([require_binary("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_the_prometheus_rule_holds_the_rules_prometheus_loads(cookies_session, tmp_path):
    """The same rules as alerts.yml, which promtool accepts."""
    project = bake(cookies_session, {}).project_path
    [rule] = of_kind(render(project), "PrometheusRule")
    alerts = project / "monitoring" / "prometheus" / "alerts.yml"
    assert rule["spec"] == yaml.safe_load(alerts.read_text())
    assert promtool_findings(rule["spec"], tmp_path) == ""


def test_the_dashboard_config_map_holds_the_dashboard(cookies_session):
    project = bake(cookies_session, {}).project_path
    [dashboard_file] = (project / "monitoring" / "grafana" / "dashboards").glob("*.json")
    [config_map] = [manifest for manifest in of_kind(render(project), "ConfigMap")
                    if manifest["metadata"]["labels"].get("grafana_dashboard") == "1"]  # fmt: skip
    assert config_map["data"] == {dashboard_file.name: dashboard_file.read_text()}


# --- checkov ------------------------------------------------------------------------------------


def checkov_results(tools: Path, manifests: list[dict], folder: Path) -> dict:
    """checkov's failed and skipped checks. --skip-download and BC_SKIP_MAPPING keep it off
    the network: without an API key it uploads nothing, and it fetches no policy."""
    command = [str(tools / "checkov"), "--framework", "kubernetes", "--skip-download",
               "--output", "json", "--file", str(write_stream(folder, manifests))]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: failed checks
    return json.loads(result.stdout)["results"]


def test_checkov_finds_nothing_but_justified_skips(tools, manifests, tmp_path):
    results = checkov_results(tools, manifests, tmp_path)
    failed = [f"{check['check_id']} {check['resource']}: {check['check_name']}"
              for check in results["failed_checks"]]  # fmt: skip
    assert failed == []
    reasons = {check["check_id"]: check["check_result"].get("suppress_comment", "")
               for check in results["skipped_checks"]}  # fmt: skip
    unexplained = [check_id for check_id, reason in reasons.items() if len(reason.split()) < 5]
    assert unexplained == []


# --- the tools do find mistakes --------------------------------------------------------------


def test_planted_mistakes_are_found(tools, cookies_session, tmp_path):
    """A misspelt field, a privileged container, a misspelt ServiceMonitor field and a broken
    rule: each tool reports its own."""
    manifests = render(bake(cookies_session, {}).project_path)
    [deployment] = of_kind(manifests, "Deployment")
    deployment["spec"]["replica"] = 3
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    [monitor] = of_kind(manifests, "ServiceMonitor")
    monitor["spec"]["endpoint"] = monitor["spec"].pop("endpoints")
    [rule] = of_kind(manifests, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["expr"] = "sum(rate(flask_http_request_total[5m])"

    assert "replica" in kubernetes_validate(tools, manifests, tmp_path, KUBERNETES_VERSIONS[-1])
    assert any("endpoint" in error for error in operator_schema_errors(tools, manifests))
    assert "unclosed left parenthesis" in promtool_findings(rule["spec"], tmp_path)
    failed = checkov_results(tools, manifests, tmp_path)["failed_checks"]
    assert "CKV_K8S_16" in {check["check_id"] for check in failed}  # privileged container
