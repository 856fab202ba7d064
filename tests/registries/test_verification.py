"""The verification after a garbage collection (``registries.services.collection_verify``)
against a real Distribution registry of this module's own (its own storage folder, whose files
the tests delete behind the registry's back), images pushed with skopeo with the agent token,
a multi-arch index among them.

The registry runs as ``registry_config`` renders it: with the in-memory blob-descriptor cache, so
a blob whose data file is deleted is still answered ``200`` to ``HEAD`` (asserted below); the
verification reads each blob's first byte instead, which comes from storage. Nothing is
restarted: what the tests expect is what a pull would see.

Expected digests come from the pushed OCI layouts' own files (``tests.support.images``), not
from the code under test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.test import override_settings

from clusters.audit import AuditEvent
from registries import conditions
from registries.demo_image import write_oci_layout
from registries.drivers.distribution import DistributionDriver, shared_session
from registries.drivers.inventory import pull_token as inventory_pull_token
from registries.maintenance import (
    CollectionState,
    CollectionTrigger,
    GarbageCollection,
    VerificationFailure,
)
from registries.models import Registry
from registries.services import registry_usage_scan
from registries.services.placement import registry_driver
from registries.services.verification import VerificationSummary, collection_verify
from tests.controlplane.test_metrics import delta, scrape  # noqa: F401 - a fixture
from tests.support.containers import ok
from tests.support.images import add_index, add_variant, tagged
from tests.support.processes import RegistryProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server"),
]

TAGS = "controlplane_registry_verification_tags_total"
MISSING = "controlplane_registry_verification_missing_total"


@pytest.fixture(scope="module")
def registry_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """Instead of the session's registry: one of this module's own, whose storage the tests
    damage, sending no notification (what the inventory holds, a usage scan found)."""
    with override_settings(REGISTRY_NOTIFICATIONS_URL="", REGISTRY_NOTIFICATIONS_TOKEN=""):
        registry = RegistryProcess(tmp_path_factory.mktemp("verified-registry")).start()
    assert "blobdescriptor: inmemory" in registry.config_path.read_text()
    yield registry
    registry.stop()


@pytest.fixture
def images(workdir: Path, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """Two OCI layouts with a layer each: ``a`` has ``latest``, an ``s390x`` variant (its layer,
    another config) and ``multi``, the index of both; ``b`` has ``latest``. Their content is the
    test's own: blobs are shared by digest across a registry, and the tests delete some."""
    a, b = workdir / "a", workdir / "b"
    write_oci_layout(a, f"verified a by {request.node.name}")
    add_variant(a, "s390x", label="other", architecture="s390x")
    add_index(a, "multi", members=["latest", "s390x"])
    write_oci_layout(b, f"verified b by {request.node.name}")
    return a, b


def document(layout: Path, digest: str) -> dict[str, Any]:
    return dict(json.loads((layout / "blobs" / digest.replace(":", "/")).read_bytes()))


def data_file(registry: RegistryProcess, digest: str) -> Path:
    """Where Distribution's filesystem storage keeps the blob ``digest`` (a manifest too)."""
    hex_ = digest.removeprefix("sha256:")
    storage = registry.workdir / f"registry-{registry.port}-data"
    return storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def collection(*, registry: Registry) -> GarbageCollection:
    """A collection of the registry's backend, at its verification (earlier ones ended)."""
    GarbageCollection.objects.filter(backend_id=registry.backend_id).update(
        state=CollectionState.SUCCEEDED
    )
    return GarbageCollection.objects.create(
        backend_id=registry.backend_id,
        trigger=CollectionTrigger.OPERATOR,
        state=CollectionState.VERIFYING,
    )


def failures(gc: GarbageCollection) -> set[tuple[str, str, str, str, str]]:
    rows = VerificationFailure.objects.filter(collection=gc)
    return {
        (r.repository.rsplit("/", 1)[-1], r.tag, r.kind, r.digest, r.parent_digest) for r in rows
    }


def pull_token(registry: Registry, repository: str) -> str:
    """The control plane's own token to read ``repository`` of the registry."""
    driver = registry_driver(registry)
    assert isinstance(driver, DistributionDriver)
    return inventory_pull_token(driver, registry.namespace, f"{registry.namespace}/{repository}")


def verified(registry: Registry) -> dict[str, Any]:
    registry.refresh_from_db()
    condition = conditions.condition_get(registry, conditions.VERIFIED)
    assert condition is not None
    return condition


def test_every_kept_tag_passes_then_a_deleted_layer_and_index_member_are_reported(
    ready_cluster,
    skopeo,
    images: tuple[Path, Path],
    registry_process,
    scrape,  # noqa: F811 - the imported fixture
    workdir: Path,
) -> None:
    a_layout, b_layout = images
    cluster = ready_cluster("A")
    for target, layout, tag in [
        ("app:multi", a_layout, "multi"),
        ("app:1", a_layout, "latest"),
        ("base:1", b_layout, "latest"),
        ("base:2", b_layout, "latest"),
    ]:
        ok(skopeo.push(layout, f"{cluster.url}/{target}", cluster.secret, tag=tag, all=True))
    index, amd, s390x = (tagged(a_layout, t) for t in ("multi", "latest", "s390x"))
    base = tagged(b_layout, "latest")
    base_layer = document(b_layout, base)["layers"][0]["digest"]
    audit_rows = AuditEvent.objects.count()
    first = collection(registry=cluster.registry)
    progress: list[tuple[int, int]] = []
    before = scrape()

    summary = collection_verify(first, progress=lambda done, total: progress.append((done, total)))

    # app: two configs and the shared layer; base: its config and layer (each checked once).
    assert summary == VerificationSummary(registries=1, tags=4, blobs=5, missing=0)
    assert progress == [(1, 1)]
    first.refresh_from_db()
    assert (first.tags_verified, first.blobs_verified, first.missing) == (4, 5, 0)
    assert not VerificationFailure.objects.exists()
    passed = verified(cluster.registry)
    assert (passed["status"], passed["reason"]) == (conditions.TRUE, "VerificationPassed")
    assert passed["message"].startswith("Every tag (4) served its manifests and blobs (5) after")
    after = scrape()
    assert delta(before, after, TAGS, backend="default") == 4
    assert delta(before, after, MISSING, kind="blob") == 0

    # Behind the registry's back: base's layer, and the s390x member of app:multi.
    data_file(registry_process, base_layer).unlink()
    data_file(registry_process, s390x).unlink()
    # The registry's blob-descriptor cache still describes the layer to HEAD.
    head = requests.head(
        f"{registry_process.url}/v2/{cluster.namespace}/base/blobs/{base_layer}",
        headers={"Authorization": f"Bearer {pull_token(cluster.registry, 'base')}"},
        timeout=5,
    )
    assert head.status_code == 200
    second = collection(registry=cluster.registry)

    summary = collection_verify(second)

    assert failures(second) == {
        ("base", "1", "blob", base_layer, base),
        ("base", "2", "blob", base_layer, base),
        ("app", "multi", "manifest", s390x, index),
    }
    # app: amd64's config and the layer (the s390x member's config is out of reach); base: 2.
    assert summary == VerificationSummary(registries=1, tags=4, blobs=4, missing=3)
    second.refresh_from_db()
    assert (second.tags_verified, second.blobs_verified, second.missing) == (4, 4, 3)
    member = VerificationFailure.objects.get(collection=second, kind="manifest")
    assert (member.registry_id, member.repository) == (
        cluster.registry.pk,
        f"{cluster.namespace}/app",
    )
    assert member.detail == "index member: 404"
    layer = VerificationFailure.objects.filter(collection=second, kind="blob").first()
    assert layer is not None
    assert layer.detail == "GET: the registry described it but served none of its data"
    missing = verified(cluster.registry)
    assert (missing["status"], missing["reason"]) == (conditions.FALSE, "ContentMissing")
    assert missing["message"].startswith("3 manifest(s) or blob(s) that 3 tag(s) need were missing")
    assert f"push those tags again ({cluster.namespace}/app:multi, " in missing["message"]
    assert "restore them from backup" in missing["message"]
    assert missing["detail"].startswith(f"Missing: {cluster.namespace}/app:multi manifest {s390x}")
    final = scrape()
    assert delta(after, final, MISSING, kind="blob") == 2
    assert delta(after, final, MISSING, kind="manifest") == 1
    assert delta(after, final, TAGS, backend="default") == 4
    # Verification reads; it writes no audit row (the collection's own start and end do).
    assert AuditEvent.objects.count() == audit_rows
    # What it reports is what a pull sees: app:1 (the amd64 member) still pulls whole.
    ok(skopeo.pull(f"{cluster.url}/app:1", cluster.secret, workdir / "pulled"))
    assert not {amd, base} & {f[3] for f in failures(second)}


def test_a_lost_manifest_is_reported_with_its_digest_and_a_tag_deleted_meanwhile_is_not(
    ready_cluster, skopeo, images: tuple[Path, Path], registry_process
) -> None:
    a_layout, b_layout = images
    cluster = ready_cluster("B")
    ok(skopeo.push(b_layout, f"{cluster.url}/lost:1", cluster.secret))
    ok(skopeo.push(a_layout, f"{cluster.url}/brief:1", cluster.secret, tag="s390x"))
    scan = registry_usage_scan(registry_id=cluster.registry.pk)
    assert scan is not None
    assert scan.ok
    lost = tagged(b_layout, "latest")
    data_file(registry_process, lost).unlink()
    gc = collection(registry=cluster.registry)
    deleted: list[str] = []

    def delete_brief_once_listed(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # A retention sweep (or a job) deletes brief:1 just after its tags were listed.
        path = urlsplit(response.url).path
        if path.endswith("/brief/tags/list") and not deleted:
            deleted.append(path)
            ok(skopeo.delete(f"{cluster.url}/brief:1", cluster.secret))

    session = shared_session()
    session.hooks["response"].append(delete_brief_once_listed)
    try:
        summary = collection_verify(gc)
    finally:
        session.hooks["response"].remove(delete_brief_once_listed)

    assert deleted
    assert failures(gc) == {("lost", "1", "manifest", lost, "")}
    assert VerificationFailure.objects.get(collection=gc).detail == "the tag's manifest: 404"
    assert summary == VerificationSummary(registries=1, tags=1, blobs=0, missing=1)
