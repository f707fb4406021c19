"""The generated image and compose stack, run for real with a container engine.

podman (with podman-compose) or Docker, whichever can run containers here; skipped where
neither can, or where the base images are missing (these machines reach no registry:
`eval "$(../shared/containers/prepare.sh)"` builds local stand-ins, and `.ci/run` does so
when it finds that script).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from harness.loopback import free_port

from .conftest import bake

# One image, built once: every test of this file runs in the same xdist worker.
pytestmark = pytest.mark.xdist_group("containers")

METRICS_PORT = 9100  # where the image serves /metrics (its METRICS_PORT)
WAIT_SECONDS = 180  # for what takes seconds on a quiet machine: a build, a scrape, an alert
GRACE_SECONDS = 30  # the grace period the README gives `docker stop`


def engine() -> str:
    for name in ("podman", "docker"):
        if shutil.which(name) and run([name, "info"], check=False).returncode == 0:
            return name
    pytest.skip("no container engine can run here (podman or docker)")


def run(command: list, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_SECONDS * 2,
                            **kwargs)  # fmt: skip
    if check and result.returncode != 0:
        # The engine's own words: a CalledProcessError would show only the command.
        pytest.fail(f"{' '.join(map(str, command))} exited {result.returncode}:\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")  # fmt: skip
    return result


def require_images(docker: str, *images: str) -> None:
    missing = [image for image in images if not has_image(docker, image)]
    if missing:
        pytest.skip(f"no local {', '.join(missing)}: run ../shared/containers/prepare.sh")


def has_image(docker: str, image: str) -> bool:
    return run([docker, "image", "inspect", image], check=False).returncode == 0


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while not (result := condition()):
        assert time.monotonic() < deadline, f"waited {WAIT_SECONDS} s for {what}"
        time.sleep(0.5)
    return result


def answers(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=10)
    except requests.RequestException:
        return None


@pytest.fixture(scope="module")
def project(cookies_session):
    """The default project, locked (its Dockerfile installs uv.lock's versions) with the uv
    of requirements-dev.txt."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEMPLATE_UV_LOCK", "1")
        patch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        result = bake(cookies_session, {})
    assert result.exit_code == 0, result.exception
    assert (result.project_path / "uv.lock").is_file()
    return result.project_path


@pytest.fixture(scope="module")
def image(project):
    docker = engine()
    answers = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    python_version = answers["python_version"]
    require_images(docker, f"python:{python_version}-slim")
    tag = f"template-test-{uuid.uuid4().hex[:8]}:latest"
    # Docker's image format: the OCI one has no HEALTHCHECK, and podman drops it.
    format_option = ["--format", "docker"] if docker == "podman" else []
    run([docker, "build", *format_option, "--tag", tag, str(project)])
    yield docker, tag
    run([docker, "rmi", "--force", tag], check=False)


class Container:
    def __init__(self, docker: str, image: str, *options: str):
        self.docker = docker
        self.name = f"template-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{(metrics_port := free_port())}/metrics"
        run([docker, "run", "--detach", "--name", self.name,
             "--publish", f"127.0.0.1:{self.port}:8000",
             "--publish", f"127.0.0.1:{metrics_port}:{METRICS_PORT}", *options, image])  # fmt: skip
        wait_until(lambda: answers(f"{self.url}/livez"), "the container to serve")

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return run([self.docker, "exec", self.name, *command], check=False)

    def inspect(self, template: str) -> str:
        return run([self.docker, "inspect", "--format", template, self.name]).stdout.strip()

    def remove(self) -> None:
        run([self.docker, "rm", "--force", self.name], check=False)


@pytest.fixture
def container(image):
    started = []

    def start(*options: str) -> Container:
        started.append(Container(*image, *options))
        return started[-1]

    yield start
    for each in started:
        each.remove()


def test_the_image_runs_healthy_as_its_user_on_a_read_only_root(image, container):
    docker, tag = image
    service = container("--read-only", "--tmpfs", "/tmp")  # the one writable path it documents
    assert requests.get(f"{service.url}/api/items/7", timeout=10).status_code == 200
    assert requests.get(f"{service.url}/metrics", timeout=10).status_code == 404
    metrics = requests.get(service.metrics_url, timeout=10).text
    assert 'flask_http_request_total{method="GET",status="200"} 1.0' in metrics

    healthcheck = json.loads(
        run([docker, "image", "inspect", "--format", "{{json .Config.Healthcheck}}", tag]).stdout
    )
    kind, *command = healthcheck["Test"]
    assert kind == "CMD"
    assert service.exec(*command).returncode == 0, "the HEALTHCHECK command fails"
    assert service.exec("id", "-u").stdout.strip() == "10001"
    assert service.exec("touch", "/app/written").returncode != 0, "the root is writable"

    logs = run([docker, "logs", service.name]).stdout.splitlines()
    records = [json.loads(line) for line in logs if line]  # every line is one JSON object
    assert all({"@timestamp", "log.level", "message"} <= record.keys() for record in records)
    assert any(record["log.logger"] == "gunicorn.access" for record in records)


def test_stopping_the_container_lets_started_requests_finish(image, container):
    docker, _ = image
    service = container("--read-only", "--tmpfs", "/tmp", "--env", "SHUTDOWN_DRAIN_SECONDS=1")
    answer = {}
    slow = threading.Thread(
        target=lambda: answer.update(response=answers(f"{service.url}/api/slow?ms=2000"))
    )
    slow.start()
    in_flight = re.compile(r"^flask_http_requests_in_flight [1-9]", re.MULTILINE)
    wait_until(lambda: in_flight.search(requests.get(service.metrics_url, timeout=10).text),
               "the slow request to be served")  # fmt: skip
    started = time.monotonic()
    run([docker, "stop", "--time", str(GRACE_SECONDS), service.name])
    stopped_after = time.monotonic() - started
    slow.join(timeout=WAIT_SECONDS)

    assert answer["response"] is not None and answer["response"].status_code == 200
    assert service.inspect("{{.State.ExitCode}}") == "0", "stopped by SIGKILL, not by itself"
    assert stopped_after < GRACE_SECONDS


class Stack:
    """The project's compose.yaml, under a name of its own, its ports free ones."""

    def __init__(self, docker: str, project: Path):
        self.project = project
        self.name = f"t{uuid.uuid4().hex[:8]}"
        self.command = [*compose_command(docker), "--project-name", self.name]
        self.ports = {name: free_port() for name in ("SERVICE", "PROMETHEUS", "ALERTMANAGER")}
        self.environment = {
            **os.environ, **{f"{name}_HOST_PORT": str(port) for name, port in self.ports.items()}
        }  # fmt: skip

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def compose(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.command, *arguments], check=check, cwd=self.project,
                   env=self.environment)  # fmt: skip


def compose_command(docker: str) -> list[str]:
    if docker == "docker":
        return ["docker", "compose"]
    beside_python = Path(sys.executable).parent / "podman-compose"
    podman_compose = shutil.which("podman-compose") or str(beside_python)
    if not Path(podman_compose).exists():
        pytest.skip("podman-compose is not installed (requirements-dev.txt)")
    return [podman_compose]


def quick_alerts(project: Path) -> None:
    """Every alert fires as soon as its condition holds, and scrapes come every second: the
    thresholds and durations are tested by promtool; here the stack's wiring is."""
    rules = project / "monitoring" / "prometheus" / "alerts.yml"
    rules.write_text(re.sub(r"(\n\s+for:) \S+", r"\1 0s", rules.read_text()))
    config = project / "monitoring" / "prometheus" / "prometheus.yml"
    config.write_text(re.sub(r"(scrape|evaluation)_interval: \S+", r"\1_interval: 1s",
                             config.read_text()))  # fmt: skip
    routes = project / "monitoring" / "alertmanager" / "alertmanager.yml"
    routes.write_text(re.sub(r"group_wait: \S+", "group_wait: 1s", routes.read_text()))


def test_the_compose_stack_scrapes_loads_every_rule_pages_and_leaves_nothing(
    image, project, tmp_path
):
    docker, _ = image
    require_images(docker, "prom/prometheus:v2.55.1", "prom/alertmanager:v0.27.0")
    shutil.copytree(project, tmp_path / "stack")
    quick_alerts(tmp_path / "stack")
    stack = Stack(docker, tmp_path / "stack")
    rules = (stack.project / "monitoring" / "prometheus" / "alerts.yml").read_text()
    try:
        # Every service but Grafana, which has no local image here.
        stack.compose("up", "--detach", "--build", "app", "prometheus", "alertmanager",
                      "alert-webhook")  # fmt: skip
        prometheus = stack.url("PROMETHEUS")
        wait_until(lambda: query(prometheus, 'up{job="my-service"} == 1'), "a scrape")
        groups = wait_until(lambda: loaded_rule_groups(prometheus), "the rules to load")
        rule_count = len(re.findall(r"^\s+- (alert|record):", rules, re.MULTILINE))
        assert sum(len(group["rules"]) for group in groups) == rule_count
        wait_for_a_page(stack)
    finally:
        stack.compose("down", "--volumes", check=False)
    project_label = f"label=com.docker.compose.project={stack.name}"
    assert run([docker, "ps", "--all", "--quiet", "--filter", project_label]).stdout == ""


def wait_for_a_page(stack: Stack) -> None:
    """Errors, again and again, until the webhook prints the page they cause."""
    deadline = time.monotonic() + WAIT_SECONDS
    while "page: FIRING" not in stack.compose("logs", "alert-webhook").stdout:
        assert time.monotonic() < deadline, "no page reached the webhook"
        for _ in range(20):
            answers(f"{stack.url('SERVICE')}/api/fail")
        time.sleep(1)


def query(prometheus: str, expression: str) -> list:
    response = answers(f"{prometheus}/api/v1/query?query={requests.utils.quote(expression)}")
    return response.json()["data"]["result"] if response is not None and response.ok else []


def loaded_rule_groups(prometheus: str) -> list:
    response = answers(f"{prometheus}/api/v1/rules")
    return response.json()["data"]["groups"] if response is not None and response.ok else []
