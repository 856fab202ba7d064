"""``DELETE .../registry/repositories/{repository}/tags/{tag}`` against the real registry, with
images pushed by skopeo: the manifest is deleted by digest, so a tag sharing it is refused
unless asked for; what is deleted is gone from the registry and from the inventory, usage drops,
and one audit row records it. (Refusals before the registry is asked: tests/api.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusters.audit import AuditEvent
from registries.demo_image import write_oci_layout
from registries.inventory import Manifest, Tag
from registries.models import Registry
from tests.api import conftest as api_fixtures
from tests.registries.conftest import ClusterAccess
from tests.registries.factories import inventory_push
from tests.registries.test_deprovisioning import tags as registry_tags

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]

make_api = api_fixtures.make_api  # the REST API's clients, for organization acme


def push(skopeo, workdir: Path, access: ClusterAccess, repository: str, tag: str, text: str):
    """Push an image whose content is ``text`` to ``repository:tag`` with skopeo, and record
    the push in the inventory as the event path would (its manifest, config and layer sizes)."""
    layout = workdir / f"{repository}-{tag}".replace("/", "_")
    digest = write_oci_layout(layout, text)
    result = skopeo.push(layout, f"{access.url}/{repository}:{tag}", access.secret)
    assert result.returncode == 0, result.stderr
    manifest_path = layout / "blobs" / digest.replace(":", "/")
    manifest = json.loads(manifest_path.read_bytes())
    blobs = {blob["digest"]: blob["size"] for blob in [manifest["config"], *manifest["layers"]]}
    inventory_push(
        access.registry, f"{access.namespace}/{repository}", tag, digest, blobs,
        size=manifest_path.stat().st_size,
    )  # fmt: skip
    return digest


def test_deleting_a_tag_deletes_its_manifest_from_the_registry_and_the_inventory(
    ready_cluster, skopeo, workdir: Path, make_api
) -> None:
    access = ready_cluster("Open Source")
    api = make_api()
    shared = push(skopeo, workdir, access, "team/app", "v1", "one")
    assert push(skopeo, workdir, access, "team/app", "latest", "one") == shared
    kept = push(skopeo, workdir, access, "team/app", "v2", "two")
    tags_path = f"/clusters/{access.cluster.pk}/registry/repositories/team/app/tags"
    before = Registry.objects.get(pk=access.registry.pk).usage_bytes

    refused = api.delete(f"{tags_path}/v1")

    assert refused.status_code == 409
    assert refused.json() == {
        "message": f"Tag 'v1' shares its manifest {shared} with latest: deleting it deletes them "
        "too. Retry with include_shared_digest=true to delete them all."
    }
    assert sorted(registry_tags(access.namespace, "team/app")) == ["latest", "v1", "v2"]
    assert not AuditEvent.objects.filter(type="REGISTRY_TAG_DELETED").exists()

    deleted = api.delete(f"{tags_path}/v1?include_shared_digest=true")

    assert deleted.status_code == 204
    assert registry_tags(access.namespace, "team/app") == ["v2"]
    assert [tag["tag"] for tag in api.get(tags_path).json()] == ["v2"]
    assert list(Tag.objects.values_list("name", "digest")) == [("v2", kept)]
    assert not Manifest.objects.filter(digest=shared).exists()
    usage = api.get(f"/clusters/{access.cluster.pk}/registry/usage").json()
    assert usage["tags"] == 1
    assert usage["bytes"] == Tag.objects.get().bytes < before
    event = AuditEvent.objects.get(type="REGISTRY_TAG_DELETED")
    assert (event.type, event.subject_type, event.subject_uuid) == (
        "REGISTRY_TAG_DELETED",
        "REGISTRY",
        str(access.registry.pk),
    )
    assert event.organization == access.cluster.organization
    assert event.data["tags"] == ["latest", "v1"]
    assert event.data["digest"] == shared

    # The last tag: the repository is listed with none left.
    assert api.delete(f"{tags_path}/v2").status_code == 204
    assert registry_tags(access.namespace, "team/app") == []
    assert api.get(f"/clusters/{access.cluster.pk}/registry/usage").json()["bytes"] == 0
    assert api.delete(f"{tags_path}/v2").json() == {
        "message": "No tag 'v2' in repository 'team/app'"
    }


def test_a_tag_the_registry_no_longer_has_is_only_forgotten(
    ready_cluster, skopeo, workdir: Path, make_api
) -> None:
    access = ready_cluster("Open Source")
    api = make_api()
    digest = push(skopeo, workdir, access, "app", "v1", "one")
    # The inventory also holds a tag on the same manifest that the registry does not have.
    inventory_push(access.registry, f"{access.namespace}/app", "ghost", digest, {})

    response = api.delete(f"/clusters/{access.cluster.pk}/registry/repositories/app/tags/ghost")

    assert response.status_code == 204
    assert registry_tags(access.namespace, "app") == ["v1"]  # its manifest is not deleted
    assert list(Tag.objects.values_list("name", "digest")) == [("v1", digest)]
    assert AuditEvent.objects.get(type="REGISTRY_TAG_DELETED").data["tags"] == ["ghost"]
