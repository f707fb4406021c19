"""The Kubernetes manifests of the metrics: the scrape and its port, the alert rules, the
metrics directory.

Like test_kubernetes.py, these tests read what render.py prints for `kubectl apply`.
"""

import re

import pytest
import yaml

from {{ cookiecutter.package_name }}.observability.metrics import (
    METRICS_PATH,
)

from .conftest import PROJECT_DIR
from .promql import ALERTS, service_job
from .test_kubernetes import container, environment, named_port, one, render

OPERATOR_API_GROUP = "monitoring.coreos.com"


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return render()


def test_the_operator_s_kinds_are_rendered(manifests):
    kinds = sorted(
        manifest["kind"]
        for manifest in manifests
        if manifest["apiVersion"].startswith(f"{OPERATOR_API_GROUP}/")
    )
    assert kinds == ["PrometheusRule", "ServiceMonitor"]


def test_the_metrics_directory_is_in_a_volume(manifests):
    """The root filesystem is read-only: the metrics directory is in an emptyDir volume."""
    mounts = [mount["mountPath"] for mount in container(manifests)["volumeMounts"]]
    # Inside a volume, not the volume itself, which the service could not remove and remake.
    metrics_directory = environment(manifests)["PROMETHEUS_MULTIPROC_DIR"]
    assert any(metrics_directory.startswith(f"{mount}/") for mount in mounts)


def test_prometheus_scrapes_the_job_that_the_alerts_select(manifests):
    """The Operator names the job after the Service's `jobLabel` label (or the Service)."""
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    labels = service["metadata"]["labels"]
    job = labels.get(monitor["spec"].get("jobLabel"), service["metadata"]["name"])
    assert job == service_job()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == METRICS_PATH
    assert endpoint["port"] in [port["name"] for port in service["spec"]["ports"]]


def test_the_metrics_port_is_the_one_the_image_serves_them_on(manifests):
    in_image = re.search(r"\bMETRICS_PORT=(\d+)\b", (PROJECT_DIR / "Dockerfile").read_text())
    assert in_image
    port = named_port(container(manifests)["ports"], "metrics")
    assert port["containerPort"] == int(in_image.group(1))
    assert environment(manifests)["METRICS_PORT"] == in_image.group(1)
    service_port = named_port(one(manifests, "Service")["spec"]["ports"], "metrics")
    assert service_port["targetPort"] == "metrics"
    [endpoint] = one(manifests, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"]


def test_only_prometheus_may_reach_the_metrics_port(manifests):
    rules = one(manifests, "NetworkPolicy")["spec"]["ingress"]
    open_to = {port["port"]: rule.get("from") for rule in rules for port in rule["ports"]}
    assert open_to["http"] is None  # anyone
    [prometheus] = open_to["metrics"]
    assert prometheus["namespaceSelector"]["matchLabels"]
    assert prometheus["podSelector"]["matchLabels"]


def test_the_rule_resource_holds_the_rules_of_alerts_yml(manifests):
    rule = one(manifests, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_the_operator_s_kinds_can_be_left_out():
    rendered = render("--without-api-group", OPERATOR_API_GROUP)
    kinds = {manifest["kind"] for manifest in rendered}
    assert kinds.isdisjoint({"ServiceMonitor", "PrometheusRule"})
    assert "Deployment" in kinds
