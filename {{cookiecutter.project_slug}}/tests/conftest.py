import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from loguru import logger

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import (
    logging as service_logging,
)
from {{ cookiecutter.package_name }}.settings import Settings

from .ecs import ecs_records

PROJECT_DIR = Path(__file__).resolve().parents[1]
# The mutant to switch on, where to record the functions a subprocess reached, and for which
# test (tools/mutation/subprocess_stats.py).
MUTATION_VARIABLES = ("MUTANT_UNDER_TEST", "MUTMUT_SUBPROCESS_HITS", "PYTEST_CURRENT_TEST")


def documented_variables() -> set[str]:
    """The variables .env.example documents: every setting, and the few that the libraries
    read from the environment themselves."""
    example = (PROJECT_DIR / ".env.example").read_text()
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))


# Values in the environment of whoever runs the tests must not leak into them.
ENVIRONMENT_VARIABLES = {name.upper() for name in Settings.model_fields} | documented_variables()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(PROJECT_DIR / "tests")  # no .env file here
    yield
    logger.remove()


def make_settings(**overrides) -> Settings:
    values = {"app_env": "development", "log_file": None, "log_format": "json", **overrides}
    return Settings(**values)


@pytest.fixture
def app():
    return create_app(make_settings())


def capture_log_records(capsys):
    """Log lines written from now on, as JSON objects.

    Call it inside the test: pytest gives each test phase its own stdout, and a log
    sink keeps writing to the stdout it was given.
    """
    service_logging.configure_logging(make_settings())
    capsys.readouterr()
    return lambda: ecs_records(capsys.readouterr().out)


@pytest.fixture
def client(app):
    return app.test_client()


def wait_until(condition, what: str, timeout: float = 20.0):
    """condition()'s first true value, asked every 10 ms. `timeout` only ends a test that is
    stuck: on a busy machine a wait may run long."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)
    return result


def from_forked_child(make) -> tuple[int, str]:
    """The pid of a child forked from this process, as a worker is from the master, and the
    text `make` returned there. The child leaves without running the parent's clean-up."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(writer, make().encode())
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    with os.fdopen(reader) as from_child:
        return pid, from_child.read()


_ports_given: set[int] = set()


def free_port() -> int:
    """A port free now and not given out before in this process: the kernel may hand the
    same free port to two calls in a row, and a service's PORT and METRICS_PORT must differ."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def get(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class ServiceProcess:
    """The service in a process of its own, on a free loopback port, stopped by its pid.

    It runs in a process group of its own: if it does not stop in time, the group is
    killed, workers included, so that nothing outlives the test.
    """

    def __init__(self, tmp_path: Path, command: list[str], **settings: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [arg.format(port=self.port) for arg in command]
        self.output = tmp_path / "service.out"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "LOG_FILE": str(tmp_path / "logs" / "service.log"),
            "PYTHONPATH": str(PROJECT_DIR / "src"),
            **settings,
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> "ServiceProcess":
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(
                self.command, cwd=PROJECT_DIR, env=self.env, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._wait_until_ready()
        return self

    def _wait_until_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited:\n{self.output.read_text()}")
            try:
                if get(f"{self.url}/livez")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the service did not answer within {timeout} s")

    def stop(self) -> None:
        stop_process_group(self.process)


def only(settings: dict[str, str]) -> dict[str, str]:
    """An environment with `settings` and no other variable (no .env, nothing inherited) but
    what mutation testing hands every process the tests start (MUTATION_VARIABLES)."""
    mutation = {name: os.environ[name] for name in MUTATION_VARIABLES if name in os.environ}
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR / "src"), **mutation, **settings}


def run_script(script: str, cwd: Path, **settings: str) -> None:
    """Python code in a process of its own, with only `settings`: for what a process does once
    (an SDK set up once per process, spans exported at exit). It must succeed."""
    subprocess.run([sys.executable, "-c", script], cwd=cwd, env=only(settings), check=True,
                   timeout=60)  # fmt: skip


def gunicorn_start_refused(**settings: str) -> subprocess.CompletedProcess:
    """gunicorn started with only `settings`, for a start it must refuse: it returns once the
    process has ended."""
    environment = only(settings)
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def stop_process_group(process: subprocess.Popen | None) -> None:
    """SIGTERM to a process started in a session of its own; SIGKILL to its whole group
    (children included) if it has not stopped within 30 s."""
    if process and process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise


@pytest.fixture
def start_service(tmp_path):
    services = []

    def start(command: list[str], **settings: str) -> ServiceProcess:
        services.append(ServiceProcess(tmp_path, command, **settings))
        return services[-1].start()

    yield start
    for service in services:
        service.stop()


@pytest.fixture
def gunicorn(start_service):
    def start(
        workers: int = 2, app: str = "", first_bind: str = "", **settings: str
    ) -> ServiceProcess:
        """`app` replaces the service's app, given in gunicorn's notation; `first_bind` is an
        address gunicorn binds before the one the tests reach (127.0.0.1 and a free port)."""
        binds = [*([first_bind] if first_bind else []), "127.0.0.1:{port}"]
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                   *(f"--bind={bind}" for bind in binds), *([app] if app else [])]  # fmt: skip
        return start_service(command, WEB_CONCURRENCY=str(workers), **settings)

    return start
