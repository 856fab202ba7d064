"""Real processes for integration tests: a Distribution registry, gunicorn and a Celery worker.

Each is started on 127.0.0.1, waited for until it answers, and stopped by its process id.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import pytest
import requests
from django.db import connection

from registries.management.commands.registry_config import render_registry_config

# Re-exported: the tests start registries with the environment the collector runs with.
from registries.registry_config_rules import registry_environment as registry_environment
from tests.support.integration import require_integration

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


#: The Debian package of each binary the tests run, where it is not the binary's own name.
PACKAGES = {"initdb": "postgresql"}


def require_binary(name: str, *, path: str | None = None) -> str:
    """The path of the executable ``name`` (or of ``path``, another build of it); fail, naming
    its Debian package, if it is not installed. Tests never skip for a missing tool."""
    found = shutil.which(path or name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: run `sudo apt-get install {PACKAGES.get(name, name)}` "
            "(make test and .ci/run install it when run as root)."
        )
    return found


def answers_http(url: str, status: int | None = None) -> bool:
    """Whether ``url`` answers a GET within a second (with ``status``, when given): a process's
    readiness check."""
    try:
        response = requests.get(url, timeout=1)
    except requests.RequestException:
        return False
    return status is None or response.status_code == status


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux's
    ``ip_local_port_range``; 32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: Ports for the servers the tests start, below the ephemeral range: a port chosen here and
#: bound by its server seconds later is never taken meanwhile by an outgoing connection (a
#: registry's debug listener once lost its port so to a client's connection in CI).
LISTEN_PORTS = range(20000, max(20001, _ephemeral_low()))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1}")


def two_free_ports() -> int:
    """A free port whose next port is free too: a registry's debug and metrics listener defaults
    to the next one."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    pytest.fail("no two consecutive free ports")


def closed_url(scheme: str = "http") -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on: a service that is down."""
    return f"{scheme}://127.0.0.1:{free_port()}"


def poll(
    check: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1
) -> T | None:
    """Call ``check`` until it returns something truthy, and return that; None after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "",
    failure: Callable[[str], str] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy, and return that; fail after ``timeout``
    (with ``failure(reason)`` as the message, if given)."""
    result = poll(check, timeout=timeout, interval=interval)
    if not result:
        reason = f"timed out after {timeout:g}s waiting for {what or check}"
        pytest.fail(failure(reason) if failure else reason)
    return result


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


class Gunicorns:
    """Production web processes: gunicorn with ``deploy/gunicorn.conf.py``, each on the
    ``PORT`` of its environment, logging to ``gunicorn-<port>.log`` in ``log_dir``.
    ``stop()`` stops every one started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, environment: Mapping[str, str], *, ready: str = "/healthz", timeout: float = 60
    ) -> str:
        """One more gunicorn; its URL once ``ready`` answers 200 (the log's tail if it exits)."""
        require_integration("gunicorn")
        url = f"http://127.0.0.1:{environment['PORT']}"
        log_path = self.log_dir / f"gunicorn-{environment['PORT']}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
                cwd=ROOT,
                env=dict(environment),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited: {log_path.read_text(errors='replace')[-3000:]}")
            try:
                return requests.get(f"{url}{ready}", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, timeout=timeout, what="gunicorn to answer")
        return url

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


class RegistryProcess:
    """``docker-registry serve`` with the configuration ``registry_config`` generates: token
    authentication against ``REGISTRY_TOKEN_REALM`` (the tests' live server) and our CA."""

    def __init__(self, workdir: Path, port: int | None = None, config: str | None = None) -> None:
        """``config``: a configuration to serve instead of the one rendered for ``port``."""
        self.workdir = workdir
        self.port = port or free_port()
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"registry-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        """The configuration it serves (written by ``start``)."""
        return self.workdir / f"registry-{self.port}.yml"

    def start(self) -> RegistryProcess:
        require_integration("a Distribution registry")
        binary = require_binary("docker-registry", path=os.environ.get("DOCKER_REGISTRY_BIN"))
        config = self.config_path
        config.write_text(
            self.config
            or render_registry_config(
                addr=self.host,
                storage_dir=str(self.workdir / f"registry-{self.port}-data"),
                log_level="warn",
            )
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=registry_environment(os.environ),
            )
        wait_until(self._answers, timeout=15, what=f"the registry on {self.host}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
        try:
            # 401: it demands a token from the realm in the challenge, as configured.
            return requests.get(f"{self.url}/v2/", timeout=1).status_code == 401
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def database_url_for_children() -> str:
    """A DATABASE_URL for the database the tests are using, for a child process."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    if connection.vendor == "postgresql":
        user = quote(settings.get("USER") or "", safe="")
        password = settings.get("PASSWORD") or ""
        credentials = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
        return (
            f"postgres://{credentials}{settings.get('HOST') or '127.0.0.1'}:"
            f"{settings.get('PORT') or 5432}/{settings['NAME']}"
        )
    raise NotImplementedError(connection.vendor)


class CeleryWorker:
    """``celery -A controlplane worker`` on the tests' database and broker.

    It runs with the production settings module, configured only through environment variables,
    as a deployed worker is: one process (``--pool solo``) unless ``pool`` names another.
    """

    def __init__(self, workdir: Path, *, pool: str = "solo", **environment: str) -> None:
        self.workdir = workdir
        self.pool = pool
        self.environment = environment
        self.log_path = workdir / f"celery-worker-{free_port()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryWorker:
        require_integration("a Celery worker")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DATABASE_URL": database_url_for_children(),
            "CELERY_FILESYSTEM_DIR": os.environ["CELERY_FILESYSTEM_DIR"],
            **self.environment,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "controlplane", "worker",
                    "--pool", self.pool, "--concurrency", "1", "--loglevel", "INFO",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._ready, timeout=30, what="the Celery worker to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        log = self.log_path.read_text(errors="replace")
        if self.process.poll() is not None:
            pytest.fail(f"the Celery worker exited: {log[-3000:]}")
        return " ready." in log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
