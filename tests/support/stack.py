"""A whole deployment of the control plane as real processes, for fault-injection tests.

A :class:`Stack` runs what production runs, configured only through environment variables
(``DJANGO_DEBUG=false``, so the production checks apply): a Distribution registry, the web
process (``runserver``, threaded), a Celery worker and Celery beat, on a private Redis
(:class:`RedisServer`) and a database of a private PostgreSQL cluster (:class:`PostgresServer`).
Every process has its own log file in the stack's folder, is waited for until it is ready, and
can be stopped, killed with any signal and restarted on the same port: those are the faults the
tests inject.

Migrating takes seconds, so the PostgreSQL cluster is started once per session with one migrated
template database (:func:`migrate_template`); each stack gets a fresh copy of it. Usage::

    postgres = PostgresServer(Path(tempfile.mkdtemp())).start()
    migrate_template(postgres, postgres.workdir)
    with Stack(tmp_path, postgres, environment={"CELERY_TASK_TIME_LIMIT": "8"}) as stack:
        cluster = stack.api("POST", "clusters", json={"name": "c1"}).json()
        stack.redis.stop()                    # broker and cache down ...
        stack.redis.start()                   # ... and back, on the same port
        stack.worker.kill(signal.SIGKILL)     # any signal; then start() it again
        stack.worker.start()
        stack.postgres.restart()              # returns once it accepts connections again
        rows = stack.sql("select state from registries_registry")

``tests/faults/conftest.py`` wraps this in fixtures (``postgres_server``, ``stack``,
``stack_factory``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
import pytest
import requests
from django.conf import settings
from psycopg import sql

from clusters.models import ApiScope
from registries.management.commands.registry_config import render_registry_config
from tests.support.integration import require_integration
from tests.support.processes import (
    ROOT,
    answers_http,
    free_port,
    registry_environment,
    require_binary,
    stop_process,
    wait_until,
)

#: The database every stack's database is a copy of (``CREATE DATABASE ... TEMPLATE``).
TEMPLATE_DATABASE = "controlplane_template"
#: The organization, user and API token every stack creates.
ORGANIZATION = "acme"
USER = "fault-injector"

#: Variables of the pytest process that must not leak into the stack's processes: the tests' own
#: database, broker, keys and realm (``controlplane.settings_test`` sets some of them).
_DROPPED_VARIABLES = frozenset({"DATABASE_URL", "REDIS_URL"})
_DROPPED_PREFIXES = ("CELERY_", "CONTROLPLANE_", "REGISTRY_", "DJANGO_")

_POSTGRES_ROOT = Path("/usr/lib/postgresql")


# --- helpers ---------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """``/usr/lib/postgresql/<highest version>/bin``; fail if PostgreSQL is not installed."""
    versions = [
        entry
        for entry in (_POSTGRES_ROOT.iterdir() if _POSTGRES_ROOT.is_dir() else [])
        if entry.name.isdigit() and (entry / "bin" / "initdb").is_file()
    ]
    if not versions:
        pytest.fail(
            f"initdb is not installed (nothing in {_POSTGRES_ROOT}/<version>/bin): run "
            "`sudo apt-get install postgresql` (the fault-injection tests never skip)."
        )
    return max(versions, key=lambda entry: int(entry.name)) / "bin"


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (or a note that it does not exist)."""
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def inherited_environment() -> dict[str, str]:
    """``os.environ`` without the pytest process's own database, broker, registry and Django
    variables: the base every child process's environment is built on."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in _DROPPED_VARIABLES and not name.startswith(_DROPPED_PREFIXES)
    }


# --- one child process -----------------------------------------------------------------------


class ManagedProcess:
    """A long-running child process: started and waited for until ready, then stopped by pid,
    killed with any signal, or restarted with the same command (and so the same port).

    Its output goes to ``log_path``, appended across restarts; ``is_ready`` is asked about the
    output since the last start only. ``context`` adds to a failure message (the other logs).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        is_ready: Callable[[ManagedProcess], bool],
        cwd: Path = ROOT,
        ready_timeout: float = 30.0,
        stop_grace: float = 10.0,
        context: Callable[[], str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.is_ready = is_ready
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.context = context
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0

    # state

    @property
    def pid(self) -> int:
        """The process id of the running process."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last process (negative: the signal), None while it runs."""
        return None if self.process is None else self.process.poll()

    def log(self) -> str:
        """Everything the process wrote since its last start."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # life cycle

    def launch(self) -> ManagedProcess:
        """Start the process without waiting for it (see :meth:`wait_ready`)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        require_integration(self.name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.starts += 1
            log.write(f"===== harness: starting {self.name} (start {self.starts}) =====\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C at the terminal reaches pytest, which stops the
                # stack in order, instead of reaching every process at once.
                start_new_session=True,
            )
        return self

    def wait_ready(self) -> ManagedProcess:
        """Wait until ``is_ready``; fail with the logs if the process exits or takes too long."""

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                pytest.fail(self._failure(f"exited with status {self.returncode}"))
            return self.is_ready(self)

        wait_until(
            ready,
            timeout=self.ready_timeout,
            interval=0.05,
            what=f"{self.name} to be ready",
            failure=self._failure,
        )
        return self

    def start(self) -> ManagedProcess:
        """Start the process and wait until it is ready."""
        return self.launch().wait_ready()

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process (by pid) without waiting."""
        if self.running:
            os.kill(self.pid, signum)

    def kill(self, signum: int = signal.SIGKILL, *, timeout: float = 10.0) -> int | None:
        """Send ``signum`` and wait for the process to exit; return its exit status."""
        if self.process is None:
            return None
        self.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(self._failure(f"did not exit within {timeout:g}s of signal {signum}"))

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; return the exit status."""
        if self.process is None:
            return None
        return stop_process(self.process, grace=self.stop_grace if grace is None else grace)

    def _failure(self, reason: str) -> str:
        message = f"{self.name} {reason}. {self.log_path}:\n{self.tail()}"
        if self.context is not None:
            message += "\n\n" + self.context()
        return message


# --- Redis -----------------------------------------------------------------------------------


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 and a free port, with no persistence.

    ``restart()`` keeps the port, so clients reconnect to the same URL (data is lost: nothing is
    saved). ``process`` is the :class:`ManagedProcess` to kill it with any signal.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [require_binary("redis-server"), "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
        self.process = ManagedProcess(
            "redis",
            argv,
            env=inherited_environment(),
            log_path=workdir / "redis.log",
            is_ready=lambda _process: _redis_answers(self.port),
            cwd=workdir,
            ready_timeout=10,
        )

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()


# --- PostgreSQL ------------------------------------------------------------------------------


class PostgresServer:
    """A private PostgreSQL cluster in ``workdir``, on 127.0.0.1 and a free port.

    Never the system one: its own data directory, port and socket folder (``workdir``), trust
    authentication for the ``postgres`` superuser, and no durability (fsync off), for speed. As
    root, ``workdir`` is given to the ``postgres`` user and the server runs as that user (initdb
    refuses root); ``workdir`` and its parents must then be reachable by it (not pytest's 0700
    base temp folder: use ``tempfile.mkdtemp()``).
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.bindir = postgres_bindir()
        self.data_dir = workdir / "data"
        self.log_path = workdir / "postgres.log"
        self.as_root = os.geteuid() == 0
        #: Seconds taken by ``start`` (the last one) and by :func:`migrate_template`.
        self.timings: dict[str, float] = {}

    # commands

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        require_integration(f"PostgreSQL's {program}")
        argv = [str(self.bindir / program), *args]
        if self.as_root:
            argv = [require_binary("runuser"), "-u", "postgres", "--", *argv]
        environment = {k: v for k, v in inherited_environment().items() if not k.startswith("PG")}
        result = subprocess.run(
            argv, cwd=self.workdir, env=environment, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}"
                f"{result.stderr}\n{self.log_path}:\n{tail(self.log_path)}"
            )
        return result

    def _options(self) -> str:
        return " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.workdir}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c synchronous_commit=off",
                "-c max_connections=200",
            ]
        )

    # life cycle

    def init(self) -> None:
        """``initdb`` the data directory, unless it exists."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.workdir, "postgres", "postgres")
            runuser = require_binary("runuser")
            probe = [runuser, "-u", "postgres", "--", "test", "-w", str(self.workdir)]
            reachable = subprocess.run(probe, check=False)
            if reachable.returncode != 0:
                pytest.fail(
                    f"The postgres user cannot reach {self.workdir}: use a folder whose parents it "
                    "can enter, e.g. from tempfile.mkdtemp() (pytest's base temp folder is 0700)."
                )
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-A", "trust", "-U", "postgres", "-N",
            "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip

    def start(self) -> PostgresServer:
        """Start the server (initialising it first if needed); return once it accepts
        connections."""
        started = time.monotonic()
        self.init()
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path),
            "-w", "-t", "60", "-o", self._options(),
        )  # fmt: skip
        wait_until(
            self.accepts_connections,
            timeout=30,
            interval=0.05,
            what=f"PostgreSQL on port {self.port}",
            failure=lambda reason: f"PostgreSQL {reason}. {self.log_path}:\n{tail(self.log_path)}",
        )
        self.timings["start"] = time.monotonic() - started
        return self

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>`` (``immediate`` is a crash); SIGKILL by pid if that fails."""
        if not self.running:
            return
        result = self._run(
            "pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", check=False
        )
        pid = self.pid
        if result.returncode != 0 and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, mode: str = "fast") -> PostgresServer:
        """Stop and start again on the same port and data; return once it accepts connections."""
        self.stop(mode)
        return self.start()

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, from ``postmaster.pid``; None if it is not running."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    # databases

    def url(self, dbname: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def execute(self, statement: sql.SQL | sql.Composed, dbname: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as connection:
            connection.execute(statement)

    def create_database(self, name: str, template: str | None = TEMPLATE_DATABASE) -> str:
        """Create database ``name`` (a copy of ``template``, if given); return its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        self.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting whoever is still connected to it."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def migrate_template(
    postgres: PostgresServer, workdir: Path, name: str = TEMPLATE_DATABASE
) -> float:
    """Create database ``name`` and ``migrate`` it with the production settings, then mark it
    a template that takes no connections. Return how long migrating took, in seconds."""
    postgres.create_database(name, template=None)
    environment = service_environment(
        database_url=postgres.url(name),
        # migrate never reaches Redis, the registry or the keys; production settings want them.
        redis_url="redis://127.0.0.1:1/0",
        registry_url="http://127.0.0.1:1",
        realm="http://127.0.0.1:1/registry/token",
        keys_dir=workdir / "keys",
        var_dir=workdir / "var",
    )
    started = time.monotonic()
    _manage(environment, ["migrate", "--noinput"], log_path=workdir / "migrate.log")
    elapsed = postgres.timings["migrate template"] = time.monotonic() - started
    postgres.execute(
        sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
            sql.Identifier(name)
        )
    )
    return elapsed


# --- the service's processes -----------------------------------------------------------------


def service_environment(
    *,
    database_url: str,
    redis_url: str,
    registry_url: str,
    realm: str,
    keys_dir: Path,
    var_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the service's processes: production settings (``DJANGO_DEBUG=false``)
    configured by variables alone, on top of :func:`inherited_environment`."""
    return {
        **inherited_environment(),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "REGISTRY_URL": registry_url,
        "REGISTRY_PUBLIC_HOST": registry_url.split("://", 1)[-1],
        "REGISTRY_TOKEN_REALM": realm,
        # The registry's configuration is rendered in the pytest process: same service, issuer.
        "REGISTRY_TOKEN_SERVICE": settings.REGISTRY_TOKEN_SERVICE,
        "REGISTRY_TOKEN_ISSUER": settings.REGISTRY_TOKEN_ISSUER,
        "REGISTRY_KEYS_DIR": str(keys_dir),
        "API_RATE_LIMIT_ORGANIZATION": "1000000",
        "API_RATE_LIMIT_TOKEN": "1000000",
        "CONTROLPLANE_VAR_DIR": str(var_dir),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def _manage(
    environment: Mapping[str, str], args: Sequence[str], *, log_path: Path, timeout: float = 120
) -> str:
    """Run ``manage.py <args>``; return its stdout (stderr goes to ``log_path``); fail on error."""
    require_integration(f"manage.py {args[0] if args else ''}")
    argv = [sys.executable, "manage.py", *args]
    result = subprocess.run(
        argv,
        cwd=ROOT,
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"===== harness: manage.py {' '.join(args)} -> {result.returncode} =====\n")
        log.write(result.stderr)
    if result.returncode != 0:
        pytest.fail(
            f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


def registry_process(
    name: str,
    config: Path,
    *,
    url: str,
    env: Mapping[str, str],
    log_path: Path,
    context: Callable[[], str] | None = None,
) -> ManagedProcess:
    """``docker-registry serve <config>`` answering on ``url``: ready when ``/v2/`` demands a
    token (401), as the configurations ``registry_config`` renders do."""
    binary = require_binary("docker-registry", path=os.environ.get("DOCKER_REGISTRY_BIN"))
    return ManagedProcess(
        name,
        [binary, "serve", str(config)],
        env=registry_environment(env),
        log_path=log_path,
        is_ready=lambda _process: answers_http(f"{url}/v2/", 401),
        context=context,
    )


@contextlib.contextmanager
def private_postgres(prefix: str) -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster with a migrated template database (:func:`migrate_template`),
    in a folder made with ``mkdtemp`` (not pytest's base temp folder, which the ``postgres`` user
    cannot reach when the tests run as root); stopped and removed at the end."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    server = PostgresServer(workdir)
    try:
        server.start()
        migrate_template(server, workdir)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


#: ``manage.py runserver`` with a longer listen backlog. Django's server listens with a backlog
#: of 10 (``WSGIServer.request_queue_size``) and no setting changes it: with dozens of concurrent
#: clients the kernel falls back to SYN cookies, clients wait a second for a retransmitted SYN,
#: and some connections are reset. Everything else is runserver's, with the production settings.
WEB_LISTEN_BACKLOG = 1024
_RUNSERVER_WITH_BACKLOG = """\
import sys
from django.core.management import execute_from_command_line
from django.core.servers.basehttp import WSGIServer
WSGIServer.request_queue_size = int(sys.argv[1])
execute_from_command_line(["manage.py", *sys.argv[2:]])
"""


def _logged(text: str) -> Callable[[ManagedProcess], bool]:
    return lambda process: text in process.log()


class Deployment:
    """Processes of the service on a fresh copy of ``postgres``'s template database: what
    :class:`Stack` and tests/scale's deployment share.

    Subclasses set ``env`` and list their ``processes`` (in the order they start), and start them
    in ``_start``; :meth:`start` stops whatever started if that fails, and :meth:`stop` stops
    every process that still runs, by pid, and drops the database. Logs stay in ``workdir``.
    """

    database_prefix = "stack"

    def __init__(self, workdir: Path, postgres: PostgresServer) -> None:
        self.workdir = workdir
        self.postgres = postgres
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database = f"{self.database_prefix}_{secrets.token_hex(4)}"
        self.keys_dir = workdir / "keys"
        self.env: dict[str, str] = {}
        self._database_created = False

    @property
    def processes(self) -> list[ManagedProcess]:
        raise NotImplementedError

    @property
    def database_url(self) -> str:
        return self.postgres.url(self.database)

    def _process(
        self,
        name: str,
        argv: Sequence[str],
        *,
        is_ready: Callable[[ManagedProcess], bool],
        env: Mapping[str, str] | None = None,
        stop_grace: float = 10.0,
    ) -> ManagedProcess:
        return ManagedProcess(
            name,
            argv,
            env=self.env if env is None else env,
            log_path=self.workdir / f"{name}.log",
            is_ready=is_ready,
            stop_grace=stop_grace,
            context=self.log_tails,
        )

    # life cycle

    def start(self) -> Self:
        """Start everything (``_start``); on failure, stop what started and fail with every
        log's tail."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def _create_database(self) -> None:
        self.postgres.create_database(self.database)
        self._database_created = True

    def _stop(self, process: ManagedProcess) -> None:
        process.stop()

    def stop(self) -> None:
        """Stop every process that still runs, by pid, and drop the database."""
        errors: list[BaseException] = []
        for process in reversed(self.processes):
            try:
                self._stop(process)
            except BaseException as exc:  # stop the others anyway
                errors.append(exc)
        if self._database_created and self.postgres.running:
            try:
                self.postgres.drop_database(self.database)
                self._database_created = False
            except psycopg.Error as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # using it

    def manage(self, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
        """Run ``manage.py <args>`` with the environment (``env``, else the deployment's);
        return its stdout."""
        return _manage(
            self.env if env is None else env,
            args,
            log_path=self.workdir / "manage.log",
            timeout=timeout,
        )

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run ``query`` on the database over a new connection (so it works across a
        PostgreSQL restart); return its rows (none for a statement without a result)."""
        with (
            psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every log (and of PostgreSQL's), for failure messages."""
        logs: Iterable[tuple[str, Path]] = [
            *((process.name, process.log_path) for process in self.processes),
            ("manage.py", self.workdir / "manage.log"),
            ("postgres", self.postgres.log_path),
        ]
        return "\n\n".join(f"--- {name}: {path}\n{tail(path, lines)}" for name, path in logs)


class Stack(Deployment):
    """The whole service as real processes: registry, web, Celery worker and beat, on a
    private Redis and a fresh database (a copy of the template) of ``postgres``.

    ``environment`` is added to every process's environment (e.g. shorter intervals). The web
    server is runserver with a listen backlog of ``WEB_LISTEN_BACKLOG`` (see
    ``_RUNSERVER_WITH_BACKLOG``); the worker runs the threads pool, as ``deploy/Procfile.dev``.
    Use it as a context manager, or call :meth:`start` and :meth:`stop` (which stops whatever
    still runs, by pid, even after a failure). Logs stay in ``workdir``.
    """

    def __init__(
        self,
        workdir: Path,
        postgres: PostgresServer,
        *,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, postgres)
        self.web_port = free_port()
        self.registry_port = free_port()
        self.registry_debug_port = free_port()
        self.realm = f"http://127.0.0.1:{self.web_port}/registry/token"
        self.redis = RedisServer(workdir / "redis")
        self.redis.process.context = self.log_tails
        self.env = service_environment(
            database_url=postgres.url(self.database),
            redis_url=self.redis.url(0),
            registry_url=self.registry_url,
            realm=self.realm,
            keys_dir=self.keys_dir,
            var_dir=workdir / "var",
            extra=environment,
        )
        self.token = ""
        self.timings: dict[str, float] = {}

        self.registry = registry_process(
            "registry",
            workdir / "registry.yml",
            url=self.registry_url,
            env=self.env,
            log_path=workdir / "registry.log",
            context=self.log_tails,
        )
        celery = [sys.executable, "-m", "celery", "-A", "controlplane"]
        runserver = ["runserver", "--noreload", f"127.0.0.1:{self.web_port}"]
        web = [sys.executable, "-c", _RUNSERVER_WITH_BACKLOG, str(WEB_LISTEN_BACKLOG)]
        self.web = self._process(
            "web",
            [*web, *runserver],
            is_ready=lambda _process: answers_http(f"{self.web_url}/"),
        )
        self.worker = self._process(
            "worker",
            [*celery, "worker", "--pool", "threads", "--concurrency", "4",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            is_ready=_logged(" ready."),
            stop_grace=15,
        )  # fmt: skip
        self.beat = self._process(
            "beat",
            [*celery, "beat", "--schedule", str(workdir / "beat-schedule"), "--loglevel", "INFO"],
            is_ready=_logged("beat: Starting..."),
        )

    # addresses

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def api_url(self) -> str:
        return f"{self.web_url}/v2/organizations/{ORGANIZATION}/"

    @property
    def processes(self) -> list[ManagedProcess]:
        """The stack's processes, in the order they start."""
        return [self.redis.process, self.registry, self.web, self.worker, self.beat]

    # life cycle

    def _start(self) -> None:
        started = time.monotonic()
        with self._timed("database"):
            self._create_database()
        with self._timed("redis"):
            self.redis.start()
        with self._timed("keys"):
            self.manage("registry_keys", "init")
        (self.workdir / "registry.yml").write_text(
            render_registry_config(
                addr=f"127.0.0.1:{self.registry_port}",
                debug_addr=f"127.0.0.1:{self.registry_debug_port}",
                storage_dir=str(self.workdir / "registry-data"),
                realm=self.realm,
                rootcertbundle=str(self.keys_dir / "ca.crt"),
            )
        )
        # The long-running processes start side by side; the token is made meanwhile.
        launching = [self.registry, self.web, self.worker, self.beat]
        for process in launching:
            process.launch()
        with self._timed("api token"):
            self.token = self.manage(
                "create_api_token",
                ORGANIZATION,
                USER,
                "--scopes",
                ",".join(ApiScope.values),
                "--quiet",
            ).strip()
        for process in launching:
            with self._timed(process.name):
                process.wait_ready()
        self.timings["total"] = time.monotonic() - started

    def _timed(self, what: str) -> _Timer:
        return _Timer(self.timings, what)

    def _stop(self, process: ManagedProcess) -> None:
        """Each stop's duration goes to ``timings``."""
        with self._timed(f"stop {process.name}"):
            process.stop()

    # using it

    def api(
        self, method: str, path: str, json: Any = None, *, timeout: float = 10, **kwargs: Any
    ) -> requests.Response:
        """A REST API request under ``/v2/organizations/<org>/``, with the stack's token."""
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method,
            self.api_url + path.lstrip("/"),
            json=json,
            headers=headers,
            timeout=timeout,
            **kwargs,
        )


class _Timer:
    """Records how long a ``with`` block took in ``timings[what]``."""

    def __init__(self, timings: dict[str, float], what: str) -> None:
        self.timings = timings
        self.what = what
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        self.timings[self.what] = time.monotonic() - self.started
