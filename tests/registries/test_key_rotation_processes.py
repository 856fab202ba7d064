"""Signing keys every replica agrees on (issue 16, item 1), with real processes: two production
web processes (gunicorn) on the tests' database, each with a REGISTRY_KEYS_DIR of its own and
no signing key file in either; only the issuing one holds the CA's key. ``registry_keys rotate``
(the issuing environment) is honoured by the other within its re-check bound; refresh tokens
issued by one are accepted by the other before and right after a rotation, one of the newest
key before the other's periodic look too; a real
Distribution registry trusting the CA accepts the other process's tokens (skopeo)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
import requests
from django.conf import settings

from clusters import services
from registries.demo_image import write_oci_layout
from registries.management.commands.registry_config import render_registry_config
from registries.models import State, TokenSigningKey
from tests.registries.factories import RegistryFactory
from tests.support.containers import ok
from tests.support.processes import (
    ROOT,
    Gunicorns,
    RegistryProcess,
    database_url_for_children,
    free_port,
    wait_until,
)
from tests.support.stack import inherited_environment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("container_tools"),
]
#: The re-check bounds of the two processes: the issuing one looks often, the other seldom
#: enough that a refresh token of the new key reaches it before its periodic look.
ISSUER_BOUND, OTHER_BOUND = 1.0, 8.0
SERVICE = settings.REGISTRY_TOKEN_SERVICE


def environment(keys_dir: Path, var_dir: Path, bound: float, port: int) -> dict[str, str]:
    return {
        **inherited_environment(),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DJANGO_DEBUG": "false",
        # The KEK is derived from it: the one the tests' keys were encrypted with.
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url_for_children(),
        "REDIS_URL": "redis://127.0.0.1:1/0",  # not used by the token endpoint
        "REGISTRY_TOKEN_REALM": "http://127.0.0.1:1/registry/token",
        "REGISTRY_TOKEN_SERVICE": SERVICE,
        "REGISTRY_TOKEN_ISSUER": settings.REGISTRY_TOKEN_ISSUER,
        "REGISTRY_KEYS_DIR": str(keys_dir),
        "REGISTRY_KEYS_RECHECK_SECONDS": str(bound),
        "CONTROLPLANE_VAR_DIR": str(var_dir),
        "PORT": str(port),
        "GUNICORN_BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
    }


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Callable[[Path, float], tuple[str, dict[str, str]]]]:
    """``start(keys_dir, bound)``: one more gunicorn; its URL and environment."""
    servers = Gunicorns(tmp_path)

    def start(keys_dir: Path, bound: float) -> tuple[str, dict[str, str]]:
        port = free_port()
        env = environment(keys_dir, tmp_path / f"var-{port}", bound, port)
        return servers.start(env), env

    try:
        yield start
    finally:
        servers.stop()


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def token_grant(url: str, **form: str) -> requests.Response:
    return requests.post(f"{url}/registry/token", data={"service": SERVICE, **form}, timeout=10)


def test_a_rotation_on_one_replica_is_honoured_by_the_other(
    web, tmp_path: Path, workdir: Path, skopeo
) -> None:
    # The issuing folder holds the CA (the tests' own, recorded in the database); the other none.
    issuing, other_keys = tmp_path / "issuing", tmp_path / "other"
    issuing.mkdir(mode=0o700)
    for name in ("ca.key", "ca.crt"):
        shutil.copy2(Path(settings.REGISTRY_KEYS_DIR) / name, issuing / name)
    a, a_env = web(issuing, ISSUER_BOUND)
    b, _ = web(other_keys, OTHER_BOUND)
    assert not other_keys.exists()  # nothing was written there, nothing read

    registry = RegistryFactory(state=State.READY)
    _, secret = services.agent_token_create(cluster=registry.cluster, description="agents")
    scope = f"repository:{registry.namespace}/base:pull,push"

    def password_grant(url: str) -> dict[str, str]:
        response = token_grant(
            url, grant_type="password", username="u", password=secret, access_type="offline",
            client_id="docker", scope=scope,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()

    def refreshed(url: str, refresh_token: str) -> int:
        return token_grant(
            url, grant_type="refresh_token", refresh_token=refresh_token, scope=scope
        ).status_code

    # Before: one key, both sign with it, each accepts the other's refresh tokens.
    from_a, from_b = password_grant(a), password_grant(b)
    old = kid(from_a["token"])
    assert kid(from_b["token"]) == old
    assert refreshed(b, from_a["refresh_token"]) == 200
    assert refreshed(a, from_b["refresh_token"]) == 200

    def rotate() -> tuple[str, float]:
        """`registry_keys rotate` where the CA's key is; the new kid and when."""
        out = manage(a_env, "registry_keys", "rotate")
        at = time.monotonic()
        newest = TokenSigningKey.objects.order_by("-issued_at").values_list("kid", flat=True)[0]
        assert f"Issued signing key {newest}." in out
        return newest, at

    # A rotation: B signs with the new key within its bound, by its periodic look alone (no
    # token of the new key reaches it first); the refresh tokens of before work on both.
    new, rotated_at = rotate()
    assert new != old
    wait_until(lambda: kid(password_grant(b)["token"]) == new, timeout=OTHER_BOUND + 3, what="B")
    assert time.monotonic() - rotated_at <= OTHER_BOUND + 3
    assert kid(password_grant(a)["token"]) == new
    assert refreshed(b, from_a["refresh_token"]) == 200
    assert refreshed(a, from_b["refresh_token"]) == 200

    # Another: B read its keys just before (its bound starts then). A signs with the newest
    # key within its own bound, and B accepts A's refresh token of it at once, before its
    # periodic look (the unknown kid makes it look), as it does the older ones.
    assert kid(password_grant(b)["token"]) == new
    newest, rotated_at = rotate()
    wait_until(
        lambda: kid(password_grant(a)["token"]) == newest, timeout=ISSUER_BOUND + 5, what="A"
    )
    newest_from_a = password_grant(a)["refresh_token"]
    assert kid(newest_from_a) == newest
    assert time.monotonic() - rotated_at < OTHER_BOUND  # before B's periodic look
    assert refreshed(b, newest_from_a) == 200
    assert refreshed(b, from_a["refresh_token"]) == 200
    assert refreshed(a, from_b["refresh_token"]) == 200
    assert kid(password_grant(b)["token"]) == newest

    # A registry trusting the CA (its certificate as `registry_keys ca-certificate` writes it)
    # accepts B's tokens of the new key: skopeo against a realm served by B alone.
    bundle = workdir / "bundle" / "ca.crt"
    manage(a_env, "registry_keys", "ca-certificate", "--output", str(bundle))
    port = free_port()
    registry_process = RegistryProcess(
        workdir,
        port=port,
        config=render_registry_config(
            addr=f"127.0.0.1:{port}",
            storage_dir=str(workdir / "registry-data"),
            log_level="warn",
            realm=f"{b}/registry/token",
            rootcertbundle=str(bundle),
        ),
    ).start()
    try:
        layout = workdir / "image"
        write_oci_layout(layout, f"signed by B {secrets.token_hex(4)}")
        reference = f"{registry_process.host}/{registry.namespace}/base:latest"
        ok(skopeo.push(layout, reference, secret))
        inspected = json.loads(ok(skopeo.inspect(reference, secret)).stdout)
        assert inspected["Name"] == f"{registry_process.host}/{registry.namespace}/base"
    finally:
        registry_process.stop()
