"""The service started production-like for the bench, on the host's PostgreSQL and Redis.

:class:`Stack` creates a fresh database (``cp_bench_run_<random>``) on the host's PostgreSQL
(``BENCH_POSTGRES_URL``, ``postgres://postgres@127.0.0.1:5432/postgres`` by default), uses one
Redis database (``BENCH_REDIS_URL``, ``redis://127.0.0.1:6379/15`` by default; flushed at start
and at exit), migrates, creates the registry's keys and configuration with the product's own
commands (``registry_keys init``, ``registry_config --output``), and starts:

- a Distribution registry with token authentication (``scripts/run-registry``), and
- gunicorn with ``deploy/gunicorn.conf.py`` and sync workers (``WEB_CONCURRENCY``, 2), DEBUG off,
  ``DJANGO_SETTINGS_MODULE=bench.settings``,

as ``deploy/`` runs them: configured by environment variables alone (:attr:`Stack.env`, which
every process of the stack gets), the production defaults otherwise (persistent database
connections, ``DATABASE_CONN_MAX_AGE``), Prometheus' multiprocess files. Two departures, so that
a measure measures one steady state: workers are never recycled (``GUNICORN_MAX_REQUESTS=0``)
and API rate limits are out of reach.

Measures start more processes with :meth:`Stack.spawn` (a registry without authentication, Celery
workers); every process is stopped by its pid on exit, and the database dropped. The process
wrapper is the fault-injection tests' :class:`tests.support.stack.ManagedProcess`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg import sql

if TYPE_CHECKING:  # imported once Django is configured (tests.support.stack imports models)
    from tests.support.stack import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = "bench.settings"
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"

#: Variables of the driver's own environment that must not reach the stack (its own database,
#: broker, settings and registry configuration).
_DROPPED_PREFIXES = ("CELERY_", "CONTROLPLANE_", "REGISTRY_", "DJANGO_", "GUNICORN_", "PG")
_DROPPED_VARIABLES = frozenset(
    {"DATABASE_URL", "REDIS_URL", "PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}
)


def free_port() -> int:
    from tests.support.processes import free_port as _free_port

    return _free_port()


def _answers(url: str, status: int | None = None) -> bool:
    from tests.support.processes import answers_http

    return answers_http(url, status)


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from ``/proc/<pid>/stat``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Stack:
    """The service as real processes: see the module's docstring. Use as a context manager."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        postgres_url: str | None = None,
        redis_url: str | None = None,
        environment: Mapping[str, str] | None = None,
        web_workers: int = 2,
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.postgres_url = postgres_url or os.environ.get(
            "BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL
        )
        self.redis_url = redis_url or os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
        self.database = f"cp_bench_run_{secrets.token_hex(4)}"
        self.web_port = free_port()
        self.registry_port = free_port()
        self.keys_dir = self.workdir / "keys"
        self.web_workers = web_workers
        self.processes: list[ManagedProcess] = []
        self._database_created = False
        self._django_configured = False
        self.env: dict[str, str] = {
            **{
                name: value
                for name, value in os.environ.items()
                if name not in _DROPPED_VARIABLES and not name.startswith(_DROPPED_PREFIXES)
            },
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.redis_url,
            "REGISTRY_URL": self.registry_url,
            "REGISTRY_PUBLIC_HOST": self.registry_host,
            "REGISTRY_TOKEN_REALM": f"{self.base_url}/registry/token",
            "REGISTRY_KEYS_DIR": str(self.keys_dir),
            "REGISTRY_STORAGE_DIR": str(self.workdir / "registry-data"),
            "CONTROLPLANE_VAR_DIR": str(self.workdir / "var"),
            "STATIC_ROOT": str(self.workdir / "static"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "metrics"),
            "LOG_FORMAT": "json",
            "PORT": str(self.web_port),
            "GUNICORN_BIND": f"127.0.0.1:{self.web_port}",
            "WEB_CONCURRENCY": str(web_workers),
            "GUNICORN_MAX_REQUESTS": "0",
            "API_RATE_LIMIT_ORGANIZATION": "100000000",
            "API_RATE_LIMIT_TOKEN": "100000000",
            "PYTHONUNBUFFERED": "1",
            **(environment or {}),
        }
        self.web: ManagedProcess | None = None
        self.registry: ManagedProcess | None = None

    # addresses

    @property
    def base_url(self) -> str:
        """The web process (gunicorn): ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def registry_url(self) -> str:
        """The registry with token authentication: ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.registry_port}"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def database_url(self) -> str:
        return _database_url(self.postgres_url, self.database)

    # Django in the driver process

    def django(self) -> None:
        """Configure Django in this process with the stack's environment (and settings), so
        that measures seed rows through services and the ORM and count queries. Idempotent."""
        if self._django_configured:
            return
        os.environ.update(self.env)
        import django

        django.setup()
        self._django_configured = True

    # processes

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        is_ready: Callable[[ManagedProcess], bool],
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
        stop_grace: float = 15.0,
    ) -> ManagedProcess:
        """Start a process of the stack (``env`` defaults to :attr:`env`), wait until
        ``is_ready``, and stop it by pid when the stack stops (or earlier, with ``.stop()``)."""
        from tests.support.stack import ManagedProcess

        process = ManagedProcess(
            name,
            argv,
            env=self.env if env is None else env,
            log_path=self.workdir / f"{name}.log",
            is_ready=is_ready,
            ready_timeout=ready_timeout,
            stop_grace=stop_grace,
            context=self.log_tails,
        )
        self.processes.append(process)
        try:
            return process.start()
        except pytest.fail.Exception as exc:  # the tests' helpers fail the test: not here
            raise RuntimeError(exc.msg) from None

    def registry_process(self, name: str, config: Path, port: int) -> ManagedProcess:
        """``scripts/run-registry <config>`` (which drops our REGISTRY_* variables), answering
        on ``port``: 401 with token authentication, 200 without."""
        return self.spawn(
            name,
            [str(ROOT / "scripts" / "run-registry"), str(config)],
            is_ready=lambda _process: _answers(f"http://127.0.0.1:{port}/v2/"),
        )

    def manage(self, *args: str, timeout: float = 300) -> str:
        """``manage.py <args>`` with the stack's environment; its stdout. Raises on failure."""
        result = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with (self.workdir / "manage.log").open("a") as log:
            log.write(f"===== manage.py {' '.join(args)} -> {result.returncode}\n{result.stderr}")
        if result.returncode != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result.stdout

    def gunicorn_pids(self) -> list[int]:
        """The process ids of gunicorn's workers (the master's children)."""
        if self.web is None or not self.web.running:
            return []
        return children(self.web.pid)

    # life cycle

    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._flush_redis()
        with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self._database_created = True
        self.django()
        (self.workdir / "static").mkdir(exist_ok=True)
        self.manage("migrate", "--noinput")
        self.manage("registry_keys", "init")
        config = self.workdir / "registry" / "config.yml"
        config.parent.mkdir(exist_ok=True)
        self.manage("registry_config", "--log-level", "warn", "--output", str(config))
        self.registry = self.registry_process("registry", config, self.registry_port)
        self.web = self.spawn(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
             "--worker-class", "sync", "--workers", str(self.web_workers)],
            is_ready=self._web_ready,
        )  # fmt: skip

    def _web_ready(self, process: ManagedProcess) -> bool:
        return (
            _answers(f"{self.base_url}/bench/bare", 200)
            and len(children(process.pid)) == self.web_workers
        )

    def _flush_redis(self) -> None:
        client: Any = redis.Redis.from_url(self.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()

    def stop(self) -> None:
        """Stop every process by pid (last started first), drop the database, flush Redis."""
        errors: list[BaseException] = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except BaseException as exc:  # stop the others anyway
                errors.append(exc)
        if self._django_configured:
            from django.db import connections

            connections.close_all()
        if self._database_created:
            try:
                with psycopg.connect(
                    self.postgres_url, autocommit=True, connect_timeout=5
                ) as connection:
                    connection.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(self.database)
                        )
                    )
                self._database_created = False
            except psycopg.Error as exc:
                errors.append(exc)
        try:
            self._flush_redis()
        except redis.RedisError as exc:
            errors.append(exc)
        if errors:
            raise errors[0]

    def cleanup(self) -> None:
        """Remove the working folder (logs, keys, registry data)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tails(self, lines: int = 30) -> str:
        from tests.support.stack import tail

        logs = [(process.name, process.log_path) for process in self.processes]
        logs.append(("manage.py", self.workdir / "manage.log"))
        return "\n\n".join(f"--- {name}: {path}\n{tail(path, lines)}" for name, path in logs)
