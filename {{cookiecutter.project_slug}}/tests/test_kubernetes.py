"""The Kubernetes manifests fit the service they deploy.

render.py prints what `kubectl apply` gets; these tests read that output, so that changing the
service (a probe path, the port, the drain, the user of the image) without changing the
manifests fails here rather than in the cluster. The monitoring components' manifests have
tests of their own, in test_kubernetes_*.py.
"""

import re
import subprocess
import sys
import typing

import pytest
import yaml
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.observability.health import (
    register_readiness_check,
)
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import PROJECT_DIR

NAME = "{{ cookiecutter.project_slug }}"
RENDER = PROJECT_DIR / "deploy" / "kubernetes" / "render.py"
# The objects of the service itself; the monitoring components add theirs to the folder.
SERVICE_OBJECTS = [
    ("ConfigMap", f"{NAME}-settings"),
    ("Deployment", NAME),
    ("HorizontalPodAutoscaler", NAME),
    ("NetworkPolicy", NAME),
    ("PodDisruptionBudget", NAME),
    ("Service", NAME),
]


def render(*options: str) -> list[dict]:
    result = subprocess.run(
        [sys.executable, str(RENDER), *options], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return render()


def one(manifests: list[dict], kind: str, name: str = NAME) -> dict:
    [found] = [
        manifest
        for manifest in manifests
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name
    ]
    return found


def container(manifests: list[dict]) -> dict:
    [found] = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def environment(manifests: list[dict]) -> dict[str, str]:
    """The container's variables: the settings ConfigMap's, then its own `env` values."""
    settings = one(manifests, "ConfigMap", f"{NAME}-settings")["data"]
    own = {item["name"]: item.get("value") for item in container(manifests)["env"]}
    return {**settings, **own}


def secret_settings() -> set[str]:
    """The variables of the settings that hold a secret (typed SecretStr)."""
    return {
        name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *typing.get_args(field.annotation))
    }


def test_every_kind_is_rendered(manifests):
    """Every object of the folder's files, in their order, and the service's own once each."""
    rendered = [(manifest["kind"], manifest["metadata"]["name"]) for manifest in manifests]
    in_files = [
        (document["kind"], document["metadata"]["name"])
        for path in sorted(RENDER.parent.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    assert rendered == in_files
    assert len(set(rendered)) == len(rendered)
    assert set(SERVICE_OBJECTS) <= set(rendered)


def test_the_selectors_find_the_pods(manifests):
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        one(manifests, "Service")["spec"]["selector"],
        one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(manifests, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    target = one(manifests, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", NAME)


def named_port(ports: list[dict], name: str) -> dict:
    [found] = [port for port in ports if port["name"] == name]
    return found


def test_the_port_is_the_one_the_image_serves_on(manifests):
    exposed = re.search(r"^EXPOSE (\d+)$", (PROJECT_DIR / "Dockerfile").read_text(), re.M)
    assert exposed
    port = named_port(container(manifests)["ports"], "http")
    assert port["containerPort"] == int(exposed.group(1))
    assert environment(manifests)["PORT"] == exposed.group(1)
    service_port = named_port(one(manifests, "Service")["spec"]["ports"], "http")
    assert service_port["targetPort"] == port["name"]


def test_the_pods_run_as_the_user_of_the_image(manifests):
    user = re.search(r"^USER (\d+):(\d+)$", (PROJECT_DIR / "Dockerfile").read_text(), re.M)
    assert user
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))


def test_the_probes_ask_the_service_s_health_endpoints(manifests, app):
    """Liveness on a path that stays 200 when a dependency fails, readiness on one that
    then answers 503."""
    probes = {
        name: container(manifests)[f"{name}Probe"]["httpGet"]
        for name in ("startup", "liveness", "readiness")
    }
    assert {probe["port"] for probe in probes.values()} == {"http"}
    register_readiness_check(app, "dependency", lambda: False)
    client = app.test_client()
    assert client.get(probes["startup"]["path"]).status_code == 200
    assert client.get(probes["liveness"]["path"]).status_code == 200
    assert client.get(probes["readiness"]["path"]).status_code == 503


def test_the_drain_fits_in_the_grace_period(manifests):
    """The readiness probe notices the drain before it ends, and Kubernetes waits for the drain
    and gunicorn's graceful stop before it kills the pod."""
    drain = float(environment(manifests)["SHUTDOWN_DRAIN_SECONDS"])
    readiness = container(manifests)["readinessProbe"]
    assert drain > readiness["periodSeconds"] * readiness["failureThreshold"]
    configuration = (PROJECT_DIR / "gunicorn.conf.py").read_text()
    graceful_timeout = re.search(r"^graceful_timeout = (\d+)$", configuration, re.M)
    assert graceful_timeout
    grace = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] > drain + int(graceful_timeout.group(1))


def test_secrets_come_from_optional_secrets(manifests):
    """A secret setting is read from a Secret, never written in the ConfigMap; without its
    Secret the pods start all the same. What a Secret holds is a setting of the service."""
    references = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container(manifests)["env"]
        if "valueFrom" in item
    }
    assert secret_settings() <= references.keys()
    assert references.keys() <= {name.upper() for name in Settings.model_fields}
    assert all(reference.get("optional") for reference in references.values())
    settings = one(manifests, "ConfigMap", f"{NAME}-settings")["data"]
    assert references.keys().isdisjoint(settings)


def test_what_the_service_writes_goes_to_its_volumes(manifests):
    """The root filesystem is read-only: temporary files are in an emptyDir volume."""
    assert container(manifests)["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [mount["mountPath"] for mount in container(manifests)["volumeMounts"]]
    # Where tempfile puts its files in the image, which sets no TMPDIR.
    assert "TMPDIR" not in environment(manifests)
    assert "/tmp" in mounts  # noqa: S108


def test_image_and_namespace_can_be_chosen():
    image = "registry.example.com/team/service@sha256:" + "0" * 64
    manifests = render("--image", image, "--namespace", "shop")
    assert container(manifests)["image"] == image
    assert {manifest["metadata"]["namespace"] for manifest in manifests} == {"shop"}
    assert {manifest["metadata"]["namespace"] for manifest in render()} == {NAME}
