"""Print the Kubernetes manifests of the service as one YAML stream, for kubectl:

    kubectl create namespace {{ cookiecutter.project_slug }}
    python deploy/kubernetes/render.py | kubectl apply -f -

The manifests are the YAML files next to this script. Every object goes into the namespace
named after the service, unless --namespace names another; --image replaces the image that
the Deployment runs (say registry.example.com/team/service@sha256:<digest>);
--without-api-group leaves out the objects of an API group the cluster lacks.

A manifest may take part of itself from a file of the project, its one source, so that no
copy has to be kept in step: an annotation `render/spec-from: <file>` makes the YAML of the
file its `spec`, and `render/data-from: <file>` makes the file's text its `data`, under the
file's name. The annotations go; the paths are from the project's folder.
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
SPEC_FROM = "render/spec-from"
DATA_FROM = "render/data-from"

Manifest = dict[str, Any]


def manifests() -> list[Manifest]:
    """Every manifest of the folder, in the order of its files, filled in from its sources."""
    found: list[Manifest] = []
    for path in sorted(HERE.glob("*.yaml")):
        found.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    for manifest in found:
        fill_in_from_sources(manifest)
    return found


def fill_in_from_sources(manifest: Manifest) -> None:
    metadata = manifest["metadata"]
    annotations = metadata.get("annotations", {})
    if spec_source := annotations.pop(SPEC_FROM, None):
        manifest["spec"] = yaml.safe_load((PROJECT_DIR / spec_source).read_text())
    if data_source := annotations.pop(DATA_FROM, None):
        source = PROJECT_DIR / data_source
        manifest["data"] = {source.name: source.read_text()}
    if not annotations:
        metadata.pop("annotations", None)


def api_group(manifest: Manifest) -> str:
    """`apps` of `apps/v1`; the core group (`v1`) has the empty name."""
    group, _, _version = str(manifest["apiVersion"]).rpartition("/")
    return group


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
    parser.add_argument(
        "--without-api-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="leave out the objects of this API group (again for more than one)",
    )
    return parser.parse_args(argv)


def rendered(argv: list[str]) -> Iterator[Manifest]:
    options = arguments(argv)
    for manifest in manifests():
        if api_group(manifest) in options.without_api_group:
            continue
        set_namespace(manifest, options.namespace)
        if options.image:
            set_image(manifest, options.image)
        yield manifest


def main(argv: list[str]) -> None:
    sys.stdout.write(yaml_stream(list(rendered(argv))))


if __name__ == "__main__":
    main(sys.argv[1:])
