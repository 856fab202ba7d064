"""deploy/keys_secret.py, the keys Job's process, against a stand-in for the Kubernetes API: it
records the CA of the Secret in the database (creating it in an empty Secret once), leaves a
filled one alone, and rotates the signing key, which lives in the database."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

SECRET_PATH = "/api/v1/namespaces/controlplane/secrets/controlplane-registry-keys"
TOKEN = "service-account-token"  # noqa: S105 - the stand-in's own


class FakeApi(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.data: dict[str, str] = {}
        self.patches: list[dict[str, Any]] = []
        self.failing_patches = 0  # how many PATCHes to answer 500 (nothing stored)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeApi

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _allowed(self) -> bool:
        if self.path != SECRET_PATH or self.headers["Authorization"] != f"Bearer {TOKEN}":
            self._answer(403, {"kind": "Status", "code": 403})
            return False
        return True

    def do_GET(self) -> None:
        if self._allowed():
            self._answer(200, {"kind": "Secret", "data": dict(self.server.data)})

    def do_PATCH(self) -> None:
        if not self._allowed():
            return
        assert self.headers["Content-Type"] == "application/merge-patch+json"
        patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.failing_patches:
            self.server.failing_patches -= 1
            self._answer(500, {"kind": "Status", "code": 500})
            return
        self.server.patches.append(patch)
        self.server.data.update(patch["data"])
        self._answer(200, {"kind": "Secret", "data": dict(self.server.data)})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def keys_secret(
    api: FakeApi, tmp_path: Path, *args: str, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    """One run of the Job's container: a fresh scratch folder, as each pod has."""
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    folders = len(list(tmp_path.glob("keys-*")))
    environment = {
        **os.environ,
        "KUBERNETES_API_URL": api.url,
        "KUBERNETES_TOKEN_FILE": str(token_file),
        "KUBERNETES_NAMESPACE": "controlplane",
        "REGISTRY_KEYS_DIR": str(tmp_path / f"keys-{folders}"),
        "DJANGO_DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "CONTROLPLANE_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    if not (tmp_path / "db.sqlite3").exists():  # the migrate Job, before the keys Job
        subprocess.run(  # noqa: S603 - the repository's own command
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"],
            env=environment, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
    return subprocess.run(  # noqa: S603 - the repository's own script
        [sys.executable, str(ROOT / "deploy" / "keys_secret.py"), "controlplane-registry-keys",
         *args],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def decoded(api: FakeApi, name: str) -> bytes:
    return base64.b64decode(api.data[name])


def test_the_keys_job_fills_the_secret_once_and_rotates_the_signing_key_in_the_database(
    api: FakeApi, tmp_path: Path
) -> None:
    first = keys_secret(api, tmp_path)

    assert first.returncode == 0, first.stderr
    assert set(api.data) == {"ca.crt", "ca.key"}  # the signing key is in the database
    assert b"PRIVATE KEY" in decoded(api, "ca.key")
    ca_key = decoded(api, "ca.key")
    [created] = [line for line in first.stdout.splitlines() if "current signing key" in line]

    again = keys_secret(api, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout
    assert len(api.patches) == 1

    rotated = keys_secret(api, tmp_path, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert len(api.patches) == 1  # nothing in the Secret changes
    assert decoded(api, "ca.key") == ca_key  # the CA registries trust stays
    kid = created.split("kid ")[1].split(",")[0]
    assert f"accepted signing key: kid {kid}," in rotated.stdout
    assert "current signing key: kid " in rotated.stdout
    assert kid not in rotated.stdout.split("current signing key: kid ")[1].split(",")[0]


def test_a_refused_api_call_fails_the_job(api: FakeApi, tmp_path: Path) -> None:
    refused = keys_secret(api, tmp_path, token="another-service-account")
    assert refused.returncode != 0
    assert "403" in refused.stderr
    assert api.patches == []


def recorded_ca(tmp_path: Path) -> bytes | None:
    """The CA certificate the database records (the Job's SQLite), None if none."""
    with sqlite3.connect(tmp_path / "db.sqlite3") as database:
        query = "SELECT certificate FROM registries_tokensigningauthority"
        row = database.execute(query).fetchone()
    return None if row is None else str(row[0]).encode()


def test_a_new_ca_is_in_the_secret_before_the_database_records_it(
    api: FakeApi, tmp_path: Path
) -> None:
    """If storing a new CA in the Secret fails (or the pod dies), nothing is recorded: the next
    run starts afresh, and the CA the database records is the one whose key the Secret holds."""
    api.failing_patches = 1

    failed = keys_secret(api, tmp_path)

    assert failed.returncode != 0
    assert "500" in failed.stderr
    assert api.data == {}
    assert recorded_ca(tmp_path) is None  # no CA whose key exists nowhere

    again = keys_secret(api, tmp_path)

    assert again.returncode == 0, again.stderr
    assert set(api.data) == {"ca.crt", "ca.key"}
    assert recorded_ca(tmp_path) == decoded(api, "ca.crt")
    rotated = keys_secret(api, tmp_path, "rotate")  # possible: the Secret holds the CA's key
    assert rotated.returncode == 0, rotated.stderr
