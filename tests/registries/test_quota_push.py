"""A hard quota, enforced at the token endpoint, with real skopeo and buildah against a real
Distribution registry that demands our tokens (the token endpoint runs in the live server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from django.db import transaction
from django.utils import timezone

from registries import services
from registries.demo_image import write_build_context, write_oci_layout
from registries.quotas import human_bytes
from registries.services.quotas import quota_set
from tests.support.containers import Buildah, layout_digest, ok

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]


def _layout_bytes(layout: Path) -> int:
    return sum(blob.stat().st_size for blob in (layout / "blobs" / "sha256").iterdir())


def _record_push(registry, repository: str, layout: Path) -> int:
    """What the event path would record of the push: its manifest and tag, through the inventory
    services (the registry's notifications are another helper's). Returns the usage."""
    digest = layout_digest(layout)
    blobs = {
        f"sha256:{blob.name}": blob.stat().st_size
        for blob in (layout / "blobs" / "sha256").iterdir()
        if f"sha256:{blob.name}" != digest
    }
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        services.manifest_put(
            locked,
            digest=digest,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=_layout_bytes(layout) - sum(blobs.values()),
            blobs=blobs,
        )
        services.tag_put(
            locked, repository=repository, tag="latest", digest=digest, at=timezone.now()
        )
        return services.usage_refresh(locked).usage_bytes


def test_a_push_over_the_hard_quota_is_refused_with_the_reason_and_pulls_still_work(
    ready_cluster, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    first, second = workdir / "first", workdir / "second"
    write_oci_layout(first, "the first image")
    write_oci_layout(second, "the second image")
    ok(skopeo.push(first, f"{a.url}/base:latest", a.secret))
    used = _record_push(a.registry, f"{a.namespace}/base", first)
    assert used == _layout_bytes(first)
    organization = a.cluster.organization

    quota_set(organization=organization, cluster=a.cluster, hard_bytes=used - 1)
    refused = skopeo.push(second, f"{a.url}/app:latest", a.secret)
    pulled = skopeo.pull(f"{a.url}/base:latest", a.secret, workdir / "pulled")

    assert refused.returncode == 1
    # A byte apart: the sizes are shown in bytes, as "1 MB of 1 MB" would tell nothing.
    assert refused.stderr.endswith(
        "at destination: unable to retrieve auth token: invalid username/password: denied: "
        f'quota exceeded: {used} B of {used - 1} B used; delete tags or raise the quota"\n'
    )
    assert "manifest unknown" in skopeo.inspect(f"{a.url}/app:latest", a.secret).stderr
    ok(pulled)
    assert layout_digest(workdir / "pulled") == layout_digest(first)

    quota_set(organization=organization, cluster=a.cluster, hard_bytes=used * 10)
    ok(skopeo.push(second, f"{a.url}/app:latest", a.secret))
    inspected = json.loads(ok(skopeo.inspect(f"{a.url}/app:latest", a.secret)).stdout)
    assert inspected["Digest"] == layout_digest(second)


def test_over_the_quota_tags_can_still_be_deleted_and_buildah_shows_the_reason(
    ready_cluster, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    write_oci_layout(workdir / "image", "an image")
    ok(skopeo.push(workdir / "image", f"{a.url}/base:latest", a.secret))
    used = _record_push(a.registry, f"{a.namespace}/base", workdir / "image")
    # The organization's default applies: the cluster has no override.
    quota_set(organization=a.cluster.organization, hard_bytes=used)

    buildah = Buildah(workdir / "job")
    authfile = workdir / "auth.json"
    write_build_context(workdir / "context", "built over the quota")
    ok(buildah.login(a.url.split("/")[0], a.secret, authfile=authfile))
    ok(buildah.build(workdir / "context", "localhost/app:built"))
    pushed = buildah.push("localhost/app:built", f"{a.url}/app:latest", authfile=authfile)

    assert pushed.returncode != 0
    assert pushed.stderr.endswith(
        "at destination: unable to retrieve auth token: invalid username/password: denied: "
        f"quota exceeded: {human_bytes(used)} of {human_bytes(used)} used; delete tags or raise "
        "the quota\n"
    )
    # skopeo delete asks for "*": it gets pull and delete, not push, and the tag goes.
    ok(skopeo.delete(f"{a.url}/base:latest", a.secret))
    assert "manifest unknown" in skopeo.inspect(f"{a.url}/base:latest", a.secret).stderr


def test_a_push_token_issued_before_the_quota_still_completes_its_push(
    ready_cluster, request_token, registry_process, skopeo, workdir: Path
) -> None:
    """Tokens are not revoked: a push in flight when the quota is reached goes on with the
    token it holds, and what it pushed reads back whole."""
    a = ready_cluster("A")
    repository = f"{a.namespace}/inflight"
    issued = request_token(a.secret, f"repository:{repository}:pull,push")["token"]
    write_oci_layout(workdir / "image", "pushed in flight")
    ok(skopeo.push(workdir / "image", f"{a.url}/base:latest", a.secret))
    used = _record_push(a.registry, f"{a.namespace}/base", workdir / "image")
    quota_set(organization=a.cluster.organization, hard_bytes=used)

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {issued}"
    layout = workdir / "image"
    index = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = (layout / "blobs" / "sha256" / index["digest"].split(":")[1]).read_bytes()
    for blob in json.loads(manifest)["layers"] + [json.loads(manifest)["config"]]:
        data = (layout / "blobs" / "sha256" / blob["digest"].split(":")[1]).read_bytes()
        upload = session.post(f"{registry_process.url}/v2/{repository}/blobs/uploads/", timeout=10)
        assert upload.status_code == 202, upload.text
        put = session.put(upload.headers["Location"], params={"digest": blob["digest"]}, data=data)
        assert put.status_code == 201, put.text
    stored = session.put(
        f"{registry_process.url}/v2/{repository}/manifests/latest",
        data=manifest,
        headers={"Content-Type": index["mediaType"]},
        timeout=10,
    )
    assert stored.status_code == 201, stored.text

    ok(skopeo.pull(f"{a.url}/inflight:latest", a.secret, workdir / "pulled"))
    assert layout_digest(workdir / "pulled") == index["digest"]
    # A new token may not push any more.
    refused = skopeo.push(workdir / "image", f"{a.url}/again:latest", a.secret)
    assert "denied: quota exceeded: " in refused.stderr
