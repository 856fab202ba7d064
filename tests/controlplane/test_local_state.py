"""The embedded default's ``var/`` is created 0700 and its SQLite database is 0600, whatever the
umask: the database holds token hashes, webhook salts and the console's sessions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from controlplane.local_state import private_directory, private_sqlite_files
from tests.controlplane.test_env import CONFIGURATION, ROOT
from tests.support.processes import free_port, stop_process, wait_until


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_every_directory_it_creates_is_0700_and_existing_ones_are_left(
    tmp_path: Path, umask_022: None
) -> None:
    (tmp_path / "existing").mkdir(mode=0o755)

    private_directory(tmp_path / "existing" / "var" / "celery" / "queue")

    assert mode(tmp_path / "existing") == 0o755
    for created in ("var", "var/celery", "var/celery/queue"):
        assert mode(tmp_path / "existing" / created) == 0o700, created


def test_a_sqlite_database_and_its_companions_become_0600(tmp_path: Path) -> None:
    database = tmp_path / "controlplane.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").write_bytes(b"")
        Path(f"{database}{suffix}").chmod(0o644)
    sqlite = SimpleNamespace(
        vendor="sqlite", settings_dict={"NAME": database}, is_in_memory_db=lambda: False
    )

    private_sqlite_files(sender=None, connection=sqlite)

    assert [mode(Path(f"{database}{s}")) for s in ("", "-wal", "-shm")] == [0o600] * 3


def test_other_databases_are_left_alone(tmp_path: Path) -> None:
    database = tmp_path / "db"
    database.write_bytes(b"")
    database.chmod(0o644)
    postgres = SimpleNamespace(vendor="postgresql", settings_dict={"NAME": database})

    private_sqlite_files(sender=None, connection=postgres)

    assert mode(database) == 0o644


def _embedded_default(var: Path) -> dict[str, str]:
    """The environment of a fresh checkout under `make run`: no configuration but the
    DJANGO_DEBUG=true the Makefile sets, local state in ``var``."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in CONFIGURATION and k != "DJANGO_LIVE_TEST_SERVER_ADDRESS"
    }
    return {**clean, "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DJANGO_DEBUG": "true", "CONTROLPLANE_VAR_DIR": str(var)}  # fmt: skip


def _under_umask_022() -> None:
    os.umask(0o022)


@pytest.mark.integration  # starts manage.py migrate and runserver
def test_a_fresh_var_is_0700_and_its_database_0600_after_migrate_and_while_serving(
    tmp_path: Path,
) -> None:
    var = tmp_path / "checkout" / "var"
    environment = _embedded_default(var)

    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False,
        preexec_fn=_under_umask_022,  # noqa: PLW1509 - only sets the umask, before exec
    )  # fmt: skip

    assert migrate.returncode == 0, migrate.stderr
    database = var / "controlplane.sqlite3"
    assert mode(var) == 0o700
    assert mode(var / "celery") == 0o700
    assert mode(database) == 0o600

    # The service, running on it, over HTTP: what SQLite keeps beside the database (its WAL
    # and index while a connection is open) is 0600 too.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_under_umask_022,  # noqa: PLW1509 - only sets the umask, before exec
    )  # fmt: skip
    try:

        def unauthorized() -> bool:
            try:
                response = requests.get(
                    f"http://127.0.0.1:{port}/v2/organizations/acme/clusters",
                    headers={"Authorization": "Bearer bkua_unknown"},
                    timeout=5,
                )
            except requests.ConnectionError:
                return False
            return response.status_code == 401  # the token was looked up in the database

        wait_until(unauthorized, timeout=60, what="runserver to answer")
        companions = [p for p in var.iterdir() if p.name.startswith("controlplane.sqlite3")]
        assert {p.name: mode(p) for p in companions} == {p.name: 0o600 for p in companions}
    finally:
        stop_process(server)
    assert mode(var) == 0o700
    assert mode(database) == 0o600
