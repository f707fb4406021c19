"""The Kubernetes manifest of the Grafana dashboard, as render.py prints it for `kubectl apply`."""

import json

import pytest

from .conftest import PROJECT_DIR
from .test_kubernetes import NAME, one, render

DASHBOARD = PROJECT_DIR / "monitoring" / "grafana" / "dashboards" / f"{NAME}.json"


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return render()


def test_the_dashboard_config_map_holds_the_dashboard(manifests):
    config_map = one(manifests, "ConfigMap", f"{NAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"][DASHBOARD.name]) == json.loads(DASHBOARD.read_text())
