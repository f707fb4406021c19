"""The local stack of compose.yaml asks nothing of the engine that Docker has and podman lacks,
every address that Alertmanager posts to is a service of the stack, and Prometheus scrapes the
service's metrics port, which no host reaches."""

from urllib.parse import urlsplit

import pytest
import yaml

# The combinations whose stack differs: with Prometheus and Alertmanager, and without.
COMBINATIONS = ["all-defaults", "no-dashboard", "no-metrics"]


def stack(project) -> dict:
    return yaml.safe_load((project.path / "compose.yaml").read_text())["services"]


@pytest.mark.parametrize("name", COMBINATIONS)
def test_no_service_needs_the_hosts_address(baked, name):
    """podman 4 refuses `host-gateway`, Docker's name for it: nothing may depend on it."""
    for service, settings in stack(baked(name)).items():
        assert "extra_hosts" not in settings, service
        assert "host-gateway" not in yaml.safe_dump(settings), service


def test_alertmanager_posts_only_to_services_of_the_stack(baked):
    project = baked("all-defaults")
    config = yaml.safe_load(
        (project.path / "monitoring" / "alertmanager" / "alertmanager.yml").read_text()
    )
    hosts = {
        urlsplit(webhook["url"]).hostname
        for receiver in config["receivers"]
        for webhook in receiver.get("webhook_configs", [])
    }
    services = stack(project)
    assert hosts
    assert hosts <= set(services)
    printer = services["alert-webhook"]
    [mount] = printer["volumes"]
    source, target, _mode = mount.split(":")
    assert (project.path / source).is_file()  # the printer script the service runs
    assert target in " ".join(printer["command"])


def test_prometheus_scrapes_the_metrics_port_that_is_not_published(baked):
    project = baked("all-defaults")
    app = stack(project)["app"]
    metrics_port = app["environment"]["METRICS_PORT"]
    assert metrics_port != app["environment"]["PORT"]
    assert all(not str(mapping).endswith(f":{metrics_port}") for mapping in app["ports"])
    config = yaml.safe_load(
        (project.path / "monitoring" / "prometheus" / "prometheus.yml").read_text()
    )
    [job] = [job for job in config["scrape_configs"] if job["job_name"] != "prometheus"]
    assert job["static_configs"] == [{"targets": [f"app:{metrics_port}"]}]
