"""The deployment ``make scale`` runs for one trial: every service twice, behind a load balancer.

All real processes on 127.0.0.1, production settings (``DJANGO_DEBUG=false``) configured by
environment variables alone, each with its own log in the trial's folder:

- a private Redis (broker, cache, RedBeat's lock and schedule, db 0; the registries'
  blob-descriptor cache, db 2) and a fresh copy of the session's migrated database on the
  session's private PostgreSQL (tests/support/stack.py);
- moto's S3 server (tests/support/s3.py) with one bucket;
- backend 1 (``default``, the settings' registry): two ``docker-registry`` replicas rendered by
  ``registry_config --replicas 2`` on that bucket, the shared Redis cache and one ``http.secret``;
- backend 2 (``backend-2``): one ``docker-registry`` on disk, added after start-up through the
  operators' REST endpoint (:meth:`ScaleStack._add_second_backend`), weighted 1 to backend 1's 2;
- two API processes: gunicorn with ``deploy/gunicorn.conf.py`` (2 workers x 4 threads each); the
  signing keys are in the database, and only API process 2 has a keys folder (the CA's files:
  where keys are issued, so where the rotation goes);
- nginx (tests/scale/lb.py) in front of the API and of both backends: the registry URLs the
  control plane provisions on and publishes, and the token realm the registries send clients to,
  are the load balancer's;
- two Celery workers (threads pool) and two beats (RedBeat: one active, one standby; each its own
  heartbeat folder, which says which).

``processes`` are :class:`tests.support.stack.ManagedProcess` es: killed with any signal and
started again on the same port, as an orchestrator restarts a container.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import requests

from clusters.models import ApiScope
from controlplane.probes import BEAT, heartbeat_path
from tests.scale.lb import Upstream, render_nginx_config
from tests.support.processes import answers_http, free_port, require_binary
from tests.support.s3 import render_s3_config, start_s3_server
from tests.support.stack import (
    ORGANIZATION,
    USER,
    Deployment,
    ManagedProcess,
    PostgresServer,
    RedisServer,
    _logged,
    registry_process,
    service_environment,
)

#: Short intervals, so that faults play out within seconds (as tests/faults runs them); beat's
#: lock expires 3 s after the active beat's last renewal, once a second.
SCALE_ENVIRONMENT = {
    "REGISTRY_RECONCILE_INTERVAL_SECONDS": "3",
    "REGISTRY_CANARY_INTERVAL_SECONDS": "30",
    "CELERY_TASK_TIME_LIMIT": "10",
    "CELERY_TASK_SOFT_TIME_LIMIT": "8",
    "REGISTRY_PROVISION_MAX_ATTEMPTS": "5",
    "REGISTRY_PROVISION_BACKOFF_SECONDS": "0.2",
    "REGISTRY_PROVISION_BACKOFF_MAX_SECONDS": "1",
    "REGISTRY_FAILED_RETRY_AFTER_SECONDS": "1",
    "CELERY_BROKER_RECONNECT_MAX_SECONDS": "1",
    "CELERY_VISIBILITY_TIMEOUT": "60",
    "CELERY_BEAT_LOOP_SECONDS": "1",
    "CELERY_BEAT_LOCK_TIMEOUT_SECONDS": "3",
    "WEB_CONCURRENCY": "2",
    "GUNICORN_THREADS": "4",
    "GUNICORN_BIND_HOST": "127.0.0.1",
    "REGISTRY_BACKENDS_CACHE_SECONDS": "1",
}
S3_ROOT = "scale-backend-1"
#: The backends' names (the first is the one the settings name) and their weights: 2:1.
BACKEND_1, BACKEND_2 = "default", "backend-2"
WEIGHTS = {BACKEND_1: 200, BACKEND_2: 100}
CACHE_DB = 2


class ScaleStack(Deployment):
    """One trial's deployment (module docstring); :meth:`start`, then :meth:`stop` by pid."""

    database_prefix = "scale"

    def __init__(self, workdir: Path, postgres: PostgresServer) -> None:
        super().__init__(workdir, postgres)
        self.lb_api_port, self.lb_registry_port = free_port(), free_port()
        self.api_ports = [free_port(), free_port()]
        self.replica_ports = [free_port(), free_port()]
        self.backend2_port, self.lb_backend2_port = free_port(), free_port()
        self.redis = RedisServer(workdir / "redis")
        self.env = service_environment(
            database_url=postgres.url(self.database),
            redis_url=self.redis.url(0),
            registry_url=self.registry_url,
            realm=f"{self.api_url}/registry/token",
            # The signing keys are in the database: no process has key files but API process
            # 2 (``issuer``), which holds the CA's, as the one replica where keys are issued.
            keys_dir=workdir / "no-key-files",
            var_dir=workdir / "var",
            extra=SCALE_ENVIRONMENT,
        )
        (workdir / "no-key-files").mkdir(exist_ok=True)
        self.issuer = 1  # API process 2: not the one killed
        self.issuer_env = {**self.env, "REGISTRY_KEYS_DIR": str(self.keys_dir)}
        self.token = ""
        self.operator_token = ""
        self.s3: ManagedProcess | None = None
        self.s3_url = ""
        self.replicas = [
            registry_process(
                f"registry-1{letter}",
                workdir / f"registry-1{letter}.yml",
                url=f"http://127.0.0.1:{port}",
                env=self.env,
                log_path=workdir / f"registry-1{letter}.log",
            )
            for letter, port in zip("ab", self.replica_ports, strict=True)
        ]
        self.backend2 = registry_process(
            "registry-2",
            workdir / "registry-2.yml",
            url=f"http://127.0.0.1:{self.backend2_port}",
            env=self.env,
            log_path=workdir / "registry-2.log",
        )
        nginx = require_binary("nginx")
        self.nginx = self._process(
            "nginx",
            [nginx, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"),
             "-c", str(workdir / "nginx.conf")],
            is_ready=lambda _p: answers_http(f"{self.registry_url}/v2/", 401),
        )  # fmt: skip
        self.apis = [
            self._process(
                f"api{n}",
                [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
                is_ready=lambda _p, port=port: answers_http(f"http://127.0.0.1:{port}/"),
                env={**(self.issuer_env if n == self.issuer + 1 else self.env), "PORT": str(port)},
            )
            for n, port in enumerate(self.api_ports, 1)
        ]
        celery = [sys.executable, "-m", "celery", "-A", "controlplane"]
        self.workers = [
            self._process(
                f"worker{n}",
                [
                    *celery,
                    "worker",
                    "--pool",
                    "threads",
                    "--concurrency",
                    "4",
                    "-n",
                    f"worker{n}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "INFO",
                ],
                is_ready=_logged(" ready."),
            )  # fmt: skip
            for n in (1, 2)
        ]
        self.beats = [
            self._process(
                f"beat{n}",
                [*celery, "beat", "--schedule", str(workdir / f"beat{n}-schedule"), "-l", "INFO"],
                is_ready=_logged("beat: Starting..."),
                env={**self.env, "PROBE_HEARTBEAT_DIR": str(workdir / f"beat{n}")},
            )
            for n in (1, 2)
        ]

    # addresses

    @property
    def api_url(self) -> str:
        """The API through the load balancer."""
        return f"http://127.0.0.1:{self.lb_api_port}"

    @property
    def api_urls(self) -> list[str]:
        """Each API process, directly."""
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def registry_url(self) -> str:
        """Backend 1 through the load balancer: what the control plane provisions on."""
        return f"http://127.0.0.1:{self.lb_registry_port}"

    @property
    def registry_host(self) -> str:
        return self.registry_url.split("://", 1)[1]

    @property
    def backend2_host(self) -> str:
        """Backend 2 through the load balancer: its public host and API URL."""
        return f"127.0.0.1:{self.lb_backend2_port}"

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every process, in the order they start."""
        s3 = [self.s3] if self.s3 is not None else []
        return [
            self.redis.process, *s3, *self.replicas, self.nginx, *self.apis, *self.workers,
            *self.beats, self.backend2,
        ]  # fmt: skip

    # life cycle

    def _start(self) -> None:
        self._create_database()
        self.redis.start()
        self.s3, self.s3_url = start_s3_server(self.workdir)
        self.manage("registry_keys", "init", env=self.issuer_env)
        for replica, port in zip(self.replicas, self.replica_ports, strict=True):
            config = render_s3_config(
                f"127.0.0.1:{port}",
                endpoint=self.s3_url,
                root=S3_ROOT,
                redis_url=self.redis.url(CACHE_DB),
                storage_dir=self.workdir / "unused-disk-storage",
                replicas=2,
                REGISTRY_TOKEN_REALM=self.env["REGISTRY_TOKEN_REALM"],
                REGISTRY_KEYS_DIR=str(self.keys_dir),
            )
            Path(replica.argv[-1]).write_text(config)
        (self.workdir / "nginx-temp").mkdir(exist_ok=True)
        (self.workdir / "nginx.conf").write_text(
            render_nginx_config(
                self.workdir,
                [
                    Upstream("api", f"127.0.0.1:{self.lb_api_port}",
                             [f"127.0.0.1:{port}" for port in self.api_ports]),
                    Upstream("backend1", self.registry_host,
                             [f"127.0.0.1:{port}" for port in self.replica_ports],
                             streaming=True, read_timeout=300),
                    Upstream("backend2", self.backend2_host,
                             [f"127.0.0.1:{self.backend2_port}"], streaming=True,
                             read_timeout=300),
                ],
                user="root" if os.geteuid() == 0 else "",
            )
        )  # fmt: skip
        launching = [*self.replicas, self.nginx, *self.apis, *self.workers, self.beats[0]]
        for process in launching:
            process.launch()
        self.token = self.manage(
            "create_api_token", ORGANIZATION, USER, "--scopes", ",".join(ApiScope.values),
            "--quiet",
        ).strip()  # fmt: skip
        for process in launching:
            process.wait_ready()
        # The first beat takes the lock; the second starts as its standby.
        self.wait_for(lambda: self.beat_state(0) == "active", 30, "the first beat to be active")
        self.beats[1].start()
        self.wait_for(lambda: self.beat_state(1) == "standby", 30, "the second beat to stand by")
        self._add_second_backend()

    def _add_second_backend(self) -> None:
        """As an operator adds one (docs/operations.md, "Registry backends"): declared draining
        through the operators' REST endpoint, its registry rendered by ``registry_config
        --backend`` and started, then made active; the first (``default``) weighted twice."""
        self.operator_token = self.manage(
            "create_api_token", ORGANIZATION, "operator", "--staff", "--scopes",
            "read_registry_backends,write_registry_backends,read_registry_keys,write_registry_keys",
            "--quiet",
        ).strip()  # fmt: skip
        self.operator("POST", "", {
            "name": BACKEND_2, "api_url": f"http://{self.backend2_host}",
            "public_host": self.backend2_host, "token_service": f"{BACKEND_2}-service",
            "storage": "filesystem", "weight": WEIGHTS[BACKEND_2], "state": "draining",
        })  # fmt: skip
        self.manage(
            "registry_config", "--backend", BACKEND_2, "--addr",
            f"127.0.0.1:{self.backend2_port}", "--storage-dir", str(self.workdir / "registry-2"),
            "--output", str(self.workdir / "registry-2.yml"), env=self.issuer_env,
        )  # fmt: skip
        self.backend2.start()
        self.operator("PATCH", BACKEND_2, {"state": "active"})
        self.operator("PATCH", BACKEND_1, {"weight": WEIGHTS[BACKEND_1]})
        # Other processes see backends changed elsewhere within REGISTRY_BACKENDS_CACHE_SECONDS.
        time.sleep(float(SCALE_ENVIRONMENT["REGISTRY_BACKENDS_CACHE_SECONDS"]) + 0.5)

    def operator(self, method: str, name: str, body: Any = None) -> Any:
        """``/v2/operator/registry-backends[/name]`` through the load balancer."""
        response = requests.request(
            method,
            f"{self.api_url}/v2/operator/registry-backends" + (f"/{name}" if name else ""),
            json=body,
            headers={"Authorization": f"Bearer {self.operator_token}"},
            timeout=30,
        )
        if response.status_code >= 300:
            raise AssertionError(f"{method} {name or 'registry-backends'}: {response.text}")
        return response.json()

    def _stop(self, process: ManagedProcess) -> None:
        if process in self.apis:
            self.kill_group(process)  # gunicorn's workers too; nothing is in flight by now
        else:
            process.stop()

    def kill_group(self, process: ManagedProcess, signum: int = signal.SIGKILL) -> None:
        """Kill ``process`` and everything in its session (a gunicorn master and its workers),
        as a container's processes die together; wait for it."""
        if process.running:
            os.killpg(process.pid, signum)
            assert process.process is not None
            process.process.wait(timeout=10)

    # using it

    def api(self, method: str, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        """A REST API request through the load balancer, with the stack's API token."""
        return requests.request(
            method,
            f"{self.api_url}/v2/organizations/{ORGANIZATION}/{path.lstrip('/')}",
            json=json,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )

    def beat_state(self, index: int) -> str:
        """What beat ``index``'s heartbeat says: active, standby, or "" (none yet)."""
        path = self.workdir / f"beat{index + 1}" / heartbeat_path(BEAT).name
        try:
            return path.read_text().strip() if self.beats[index].running else ""
        except FileNotFoundError:
            return ""

    def active_beat(self) -> int | None:
        states = [self.beat_state(index) for index in range(len(self.beats))]
        return states.index("active") if "active" in states else None

    def wait_for(self, check: Any, timeout: float, what: str) -> float:
        """Seconds until ``check()``; fail with the logs after ``timeout``."""
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"timed out waiting for {what}\n{self.log_tails()}")
            time.sleep(0.05)
        return time.monotonic() - started
