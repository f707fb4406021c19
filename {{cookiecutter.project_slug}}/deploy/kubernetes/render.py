"""Print the Kubernetes manifests of the service as one YAML stream, for kubectl:

    kubectl create namespace {{ cookiecutter.project_slug }}
    python deploy/kubernetes/render.py | kubectl apply -f -

The manifests are the YAML files next to this script. Every object goes into the namespace
named after the service, unless --namespace names another; --image replaces the image that
the Deployment runs (say registry.example.com/team/service@sha256:<digest>).
{%- if cookiecutter.use_prometheus %}

Some manifests are filled in here from the files that the local monitoring stack reads, their
one source, so that no copy has to be kept in step: the PrometheusRule gets the rules of
monitoring/prometheus/alerts.yml{% if cookiecutter.use_grafana %}, and the dashboard ConfigMap the JSON of
monitoring/grafana/dashboards/{% endif %}.
--without-prometheus-operator leaves out the ServiceMonitor and the PrometheusRule, for a
cluster without the Prometheus Operator.
{%- endif %}
"""

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

SERVICE_NAME = "{{ cookiecutter.project_slug }}"
HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE.parents[1]
{%- if cookiecutter.use_prometheus %}
ALERTS = PROJECT_DIR / "monitoring" / "prometheus" / "alerts.yml"
OPERATOR_API = "monitoring.coreos.com/v1"
{%- endif %}
{%- if cookiecutter.use_grafana %}
DASHBOARD = PROJECT_DIR / "monitoring" / "grafana" / "dashboards" / f"{SERVICE_NAME}.json"
# The label Grafana's sidecar looks for.
DASHBOARD_LABEL = "grafana_dashboard"
{%- endif %}

Manifest = dict[str, Any]


def manifests() -> list[Manifest]:
    """Every manifest of the folder, in the order of its files{% if cookiecutter.use_prometheus %}, filled in from their sources{% endif %}."""
    found = []
    for path in sorted(HERE.glob("*.yaml")):
        found.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
{%- if cookiecutter.use_prometheus %}
    for manifest in found:
        fill_in_from_source(manifest)
{%- endif %}
    return found
{%- if cookiecutter.use_prometheus %}


def fill_in_from_source(manifest: Manifest) -> None:
    if manifest["kind"] == "PrometheusRule":
        manifest["spec"] = yaml.safe_load(ALERTS.read_text())
{%- if cookiecutter.use_grafana %}
    elif DASHBOARD_LABEL in manifest["metadata"].get("labels", {}):
        manifest["data"] = {DASHBOARD.name: DASHBOARD.read_text()}
{%- endif %}


def made_by_the_operator(manifest: Manifest) -> bool:
    return bool(manifest["apiVersion"] == OPERATOR_API)
{%- endif %}


def set_namespace(manifest: Manifest, namespace: str) -> None:
    manifest["metadata"]["namespace"] = namespace


def set_image(manifest: Manifest, image: str) -> None:
    if manifest["kind"] == "Deployment":
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            container["image"] = image


class ReadableDumper(yaml.SafeDumper):
    """Writes text of several lines as a block, as a person would, not as one quoted line."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


ReadableDumper.add_representer(str, _represent_text)


def yaml_stream(documents: list[Manifest]) -> str:
    return yaml.dump_all(documents, Dumper=ReadableDumper, sort_keys=False, width=1000)


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", help="the image to run, instead of the Deployment's")
    parser.add_argument(
        "--namespace",
        default=SERVICE_NAME,
        help="the namespace of every object (default: %(default)s, the service's own)",
    )
{%- if cookiecutter.use_prometheus %}
    parser.add_argument(
        "--without-prometheus-operator",
        action="store_true",
        help="leave out the ServiceMonitor and the PrometheusRule",
    )
{%- endif %}
    return parser.parse_args(argv)


def rendered(argv: list[str]) -> Iterator[Manifest]:
    options = arguments(argv)
    for manifest in manifests():
{%- if cookiecutter.use_prometheus %}
        if options.without_prometheus_operator and made_by_the_operator(manifest):
            continue
{%- endif %}
        set_namespace(manifest, options.namespace)
        if options.image:
            set_image(manifest, options.image)
        yield manifest


def main(argv: list[str]) -> None:
    sys.stdout.write(yaml_stream(list(rendered(argv))))


if __name__ == "__main__":
    main(sys.argv[1:])
