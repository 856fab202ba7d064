"""The image, built as `make image` builds it and run as deploy/README.md runs it.

deploy/build-image makes the Debian base with mmdebstrap and builds deploy/Containerfile with
buildah (vfs storage in the test's folder, chroot isolation); deploy/run-image runs the image's
processes against the host's PostgreSQL (a database of the test's own) and Redis, and a real
registry: ``migrate`` then ``keys`` then ``web``, until ``/readyz`` answers 200. Everything the
test made (the image, its containers, the store, the database) is removed by id or by name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from django.conf import settings

from tests.support.processes import ROOT, RegistryProcess, free_port, require_binary, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]

READY_PATH = "/readyz"
#: The image's user (deploy/Containerfile): not root, and numeric for runAsNonRoot.
IMAGE_UID = 10001
ENTRYPOINT = "/app/deploy/entrypoint"
BUILD_TIMEOUT = 900


def _admin_connection() -> psycopg.Connection:
    database = settings.DATABASES["default"]
    return psycopg.connect(
        host=database["HOST"],
        port=database["PORT"] or 5432,
        user=database["USER"],
        password=database["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture
def image_database() -> Iterator[str]:
    """A database of this test's own on the tests' PostgreSQL server, as a DATABASE_URL."""
    name = f"cp_image_{secrets.token_hex(4)}"
    database = settings.DATABASES["default"]
    with _admin_connection() as connection:
        connection.execute(f'create database "{name}"')
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    yield f"postgres://{credentials}@{database['HOST']}:{database['PORT'] or 5432}/{name}"
    with _admin_connection() as connection:
        connection.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url.startswith("redis://"):
        message = "needs Redis: set REDIS_URL=redis://... (CI does)"
        if os.environ.get("CONTROLPLANE_TEST_STRICT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


class Image:
    """The image in a private buildah store, and the scripts that build and run it."""

    def __init__(self, workdir: Path) -> None:
        self.store = workdir / "store"
        self.workdir = workdir
        self.id = ""

    def build(self) -> None:
        result = subprocess.run(  # noqa: S603 - the repository's own script
            [str(ROOT / "deploy" / "build-image"), "--store", str(self.store),
             "--tag", f"localhost/controlplane:test-{secrets.token_hex(4)}"],
            capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"build failed:\n{result.stderr[-6000:]}"
        self.id = result.stdout.strip().splitlines()[-1]

    def command(self, environment: dict[str, str], *args: str) -> list[str]:
        options = [
            option for name, value in environment.items() for option in ("-e", f"{name}={value}")
        ]
        return [str(ROOT / "deploy" / "run-image"), "--store", str(self.store),
                "--image", self.id, *options, *args]  # fmt: skip

    def run(self, environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the repository's own script
            self.command(environment, *args), capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip

    def buildah(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - buildah on the test's own store
            [require_binary("buildah"), "--root", str(self.store / "root"),
             "--runroot", str(self.store / "run"), "--storage-driver", "vfs", *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def remove(self) -> None:
        if self.id:
            self.buildah("rmi", "--force", self.id)
        shutil.rmtree(self.store, ignore_errors=True)


@pytest.fixture
def image(tmp_path: Path, container_tools: None) -> Iterator[Image]:
    require_binary("mmdebstrap")
    require_binary("buildah")
    built = Image(tmp_path)
    try:
        yield built
    finally:
        built.remove()


def test_the_image_builds_and_its_web_process_becomes_ready(
    image: Image,
    image_database: str,
    redis_url: str,
    registry_process: RegistryProcess,
    tmp_path: Path,
) -> None:
    image.build()

    config = json.loads(image.buildah("inspect", "--type", "image", image.id).stdout)["OCIv1"]
    assert config["config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert config["config"]["Entrypoint"] == [ENTRYPOINT]

    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    os.chown(keys, IMAGE_UID, IMAGE_UID)
    port = free_port()
    environment = {
        "DATABASE_URL": image_database,
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "REGISTRY_URL": registry_process.url,
        "REGISTRY_TOKEN_REALM": f"http://127.0.0.1:{port}/registry/token",
        "REGISTRY_KEYS_DIR": "/keys",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
    }

    # One working container for the one-shot processes (each costs a copy of the image on vfs):
    # a look inside as the image's user (runtime requirements only, the static files collected
    # at build), then the entrypoint's migrate and keys, as the compose file runs them.
    probe = (
        "import importlib.util as u, os; "
        "print('probe', os.getuid(), [m for m in ('pytest', 'mypy', 'ruff', 'playwright', 'honcho')"
        " if u.find_spec(m)], os.path.exists('/app/static/staticfiles.json'))"
    )
    script = f'python -c "{probe}" && {ENTRYPOINT} migrate && exec {ENTRYPOINT} keys'
    one_shot = image.run(environment, "-v", f"{keys}:/keys", "sh", "-c", script)
    assert one_shot.returncode == 0, one_shot.stdout + one_shot.stderr
    assert f"probe {IMAGE_UID} [] True" in one_shot.stdout.splitlines()
    assert "Created the registry token CA in /keys." in one_shot.stdout
    assert {"ca.crt", "ca.key"} <= {path.name for path in keys.iterdir()}  # signing key: the DB
    assert "Applying registries." in one_shot.stdout

    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        web = subprocess.Popen(  # noqa: S603 - the repository's own script
            image.command(environment, "-v", f"{keys}:/keys", "web"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> requests.Response | None:
            assert web.poll() is None, f"the web process exited:\n{log_path.read_text()[-6000:]}"
            try:
                response = requests.get(base + READY_PATH, timeout=5)
            except requests.ConnectionError:
                return None
            return response if response.status_code == 200 else None

        response = wait_until(
            ready, timeout=120, interval=0.5, what=f"{READY_PATH} answering 200",
            failure=lambda what: f"{what}\n{log_path.read_text()[-6000:]}",
        )  # fmt: skip
        assert response.headers["Content-Type"].startswith("application/json")
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        css = requests.get(base + "/static/admin/css/base.css", timeout=5)
        assert css.status_code == 200
        assert css.headers["Content-Type"].startswith("text/css")
        assert "gunicorn" in requests.get(base + "/admin/login/", timeout=5).headers["Server"]
    finally:
        # deploy/run-image, buildah and gunicorn share the session started above: stop them all.
        os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(timeout=30)
    leftover = image.buildah("containers", "--quiet").stdout.split()
    assert leftover == [], f"deploy/run-image left working containers behind: {leftover}"
