"""Jobs push and pull with real clients (skopeo, buildah) against a real Distribution registry
that demands our tokens; the token endpoint runs in the live server. Nothing is mocked."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import jwt
import pytest
import requests
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from clusters import services
from registries.demo_image import write_build_context, write_oci_layout
from tests.support.containers import Buildah, layout_digest, ok, read_from_layout

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]

DENIED = "denied: requested access to the resource is denied"
BAD_CREDENTIALS = (
    "invalid username/password: unauthorized: Invalid, expired or revoked agent token."
)


@pytest.fixture
def image(workdir: Path) -> tuple[Path, str]:
    """An OCI layout of a small image, and its manifest digest."""
    layout = workdir / "image"
    return layout, write_oci_layout(layout, "hello from a test")


def test_skopeo_pushes_inspects_pulls_and_deletes_with_the_agent_token(
    ready_cluster, skopeo, image, workdir: Path
) -> None:
    a = ready_cluster("A")
    layout, digest = image
    reference = f"{a.url}/base:latest"

    ok(skopeo.push(layout, reference, a.secret))
    inspected = json.loads(ok(skopeo.inspect(reference, a.secret)).stdout)
    ok(skopeo.pull(reference, a.secret, workdir / "pulled"))

    assert inspected["Digest"] == digest
    assert inspected["Name"] == f"{a.url}/base"
    assert layout_digest(workdir / "pulled") == digest  # what was pushed is what is pulled
    assert read_from_layout(workdir / "pulled", "etc/hello.txt") == b"hello from a test\n"

    ok(skopeo.delete(reference, a.secret))
    gone = skopeo.inspect(reference, a.secret)
    assert gone.returncode == 1
    assert "manifest unknown" in gone.stderr


def test_buildah_builds_from_a_dockerfile_and_pushes(
    ready_cluster, buildah: Buildah, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    authfile = workdir / "auth.json"
    write_build_context(workdir / "context", "built by buildah")

    ok(buildah.login(a.url.split("/")[0], a.secret, authfile=authfile))
    ok(buildah.build(workdir / "context", "localhost/base:built"))
    ok(buildah.push("localhost/base:built", f"{a.url}/base:latest", authfile=authfile))

    ok(skopeo.pull(f"{a.url}/base:latest", a.secret, workdir / "pulled"))
    assert read_from_layout(workdir / "pulled", "etc/hello.txt") == b"built by buildah\n"
    # The login stored the agent token for the registry host only, as docker login does.
    assert list(json.loads(authfile.read_text())["auths"]) == [a.url.split("/")[0]]


def test_the_seed_pipeline_builds_a_base_image_and_a_later_step_builds_on_it(
    ready_cluster, job_environment, skopeo, workdir: Path
) -> None:
    """Buildkite's example: step 1 builds ``.buildkite/Dockerfile.build`` and pushes it to
    ``${BUILDKITE_HOSTED_REGISTRY_URL}/base:latest``; step 2 builds ``FROM`` it with a ``RUN``.
    Each step is a separate job: its own storage, its own login, the URL only from the agent
    environment endpoint, the agent token as the only credential."""
    seed = ready_cluster("Seed")

    def job(name: str) -> tuple[Buildah, str, Path]:
        url = job_environment(seed.secret, "linux")["BUILDKITE_HOSTED_REGISTRY_URL"]
        buildah, authfile = Buildah(workdir / name), workdir / name / "auth.json"
        ok(buildah.login(url.split("/")[0], seed.secret, authfile=authfile))
        return buildah, url, authfile

    buildah, url, authfile = job("step-1")
    write_build_context(workdir / "step-1" / "context", "seeded base")
    ok(buildah.build(workdir / "step-1" / "context", "localhost/base:build"))
    ok(buildah.push("localhost/base:build", f"{url}/base:latest", authfile=authfile))

    buildah, url, authfile = job("step-2")
    context = workdir / "step-2" / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {url}/base:latest\n"
        'RUN ["/bin/busybox", "sh", "-c", '
        '"cat /etc/hello.txt > /etc/step-2.txt && echo ran-on-base >> /etc/step-2.txt"]\n'
    )
    ok(buildah.build(context, "localhost/app:build", authfile=authfile))
    ok(buildah.push("localhost/app:build", f"{url}/app:latest", authfile=authfile))

    ok(skopeo.pull(f"{url}/app:latest", seed.secret, workdir / "app"))
    assert read_from_layout(workdir / "app", "etc/step-2.txt") == b"seeded base\nran-on-base\n"


def test_another_clusters_token_can_neither_pull_nor_push_nor_delete(
    ready_cluster, skopeo, image, workdir: Path
) -> None:
    a, b = ready_cluster("A"), ready_cluster("B")
    layout, digest = image
    reference = f"{a.url}/base:latest"
    ok(skopeo.push(layout, reference, a.secret))

    inspect = skopeo.inspect(reference, b.secret)
    pull = skopeo.pull(reference, b.secret, workdir / "stolen")
    push = skopeo.push(layout, f"{a.url}/evil:latest", b.secret)
    delete = skopeo.delete(reference, b.secret)

    assert inspect.returncode == pull.returncode == push.returncode == delete.returncode == 1
    # skopeo quotes the registry's answer, so its line breaks appear as "\n".
    refused = rf"reading manifest latest in {a.url}/base: errors:\n{DENIED}\n"
    assert refused in inspect.stderr
    assert refused in pull.stderr
    assert f"exists in {a.url}/evil: errors:\\n{DENIED}\\n" in push.stderr
    assert f"Failed to delete {reference}: " in delete.stderr
    assert r"\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"" in delete.stderr
    assert delete.stderr.endswith(' (401 Unauthorized)"\n')
    assert not (workdir / "stolen" / "index.json").exists()
    # A's image is untouched, and nothing was pushed into A's namespace.
    assert json.loads(ok(skopeo.inspect(reference, a.secret)).stdout)["Digest"] == digest
    assert "manifest unknown" in skopeo.inspect(f"{a.url}/evil:latest", a.secret).stderr


@pytest.mark.parametrize("how", ["revoked", "expired", "wrong"])
def test_revoked_expired_and_wrong_tokens_are_refused(
    ready_cluster, skopeo, image, how: str
) -> None:
    a = ready_cluster("A")
    layout, _ = image
    ok(skopeo.push(layout, f"{a.url}/base:latest", a.secret))
    secret = a.secret
    if how == "revoked":
        services.agent_token_revoke(token=a.token)
    elif how == "expired":
        # Saved as the console saves it (an UPDATE through the ORM sends no signal, so a
        # process that cached the token would keep it for HOT_CACHE_SECONDS: docs/agents.md).
        a.token.expires_at = timezone.now()
        a.token.save(update_fields=["expires_at"])
    else:
        secret = "bkct_not-a-token"

    result = skopeo.inspect(f"{a.url}/base:latest", secret)

    assert result.returncode == 1
    assert BAD_CREDENTIALS in result.stderr


def test_anonymous_clients_get_nothing(ready_cluster, skopeo, image, workdir: Path) -> None:
    a = ready_cluster("A")
    layout, _ = image
    ok(skopeo.push(layout, f"{a.url}/base:latest", a.secret))

    inspect = skopeo.inspect(f"{a.url}/base:latest", None)
    pull = skopeo.pull(f"{a.url}/base:latest", None, workdir / "anonymous")

    assert inspect.returncode == pull.returncode == 1
    assert DENIED in inspect.stderr
    assert DENIED in pull.stderr


def test_tokens_signed_before_and_after_a_rotation_work_without_restarting_the_registry(
    live_server, ready_cluster, registry_process, skopeo, image, request_token
) -> None:
    a = ready_cluster("A")
    layout, _ = image
    ok(skopeo.push(layout, f"{a.url}/base:latest", a.secret))
    registry_pid = registry_process.process.pid
    scope = f"repository:{a.namespace}/base:pull"

    before = request_token(a.secret, scope, offline_token="true")
    call_command("registry_keys", "rotate", stdout=StringIO())
    after = request_token(a.secret, scope)

    kids = {jwt.get_unverified_header(t["token"])["kid"] for t in (before, after)}
    assert len(kids) == 2
    for issued in (before, after):
        tags = requests.get(
            f"{registry_process.url}/v2/{a.namespace}/base/tags/list",
            headers={"Authorization": f"Bearer {issued['token']}"},
            timeout=5,
        )
        assert tags.status_code == 200, tags.text
        assert tags.json() == {"name": f"{a.namespace}/base", "tags": ["latest"]}
    # A refresh token from before the rotation is still honoured, and a push after it works.
    refreshed = requests.post(
        f"{live_server.url}/registry/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": before["refresh_token"],
            "service": settings.REGISTRY_TOKEN_SERVICE,
            "scope": f"repository:{a.namespace}/base:pull",
        },
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    ok(skopeo.push(layout, f"{a.url}/base:rotated", a.secret))
    assert registry_process.process.pid == registry_pid
    assert registry_process.process.poll() is None
