"""``delete_untagged_decision``: garbage-collect's ``--delete-untagged`` only where it is safe
(docs/retention.md#untagged-manifests). Distribution 2.8 deletes the members of a tagged image
index with it, so any tagged index in the backend's storage rules it out, read from the storage
itself (filesystem: the tags' current links and their manifests' media types, laid out here as
Distribution lays them out); storage that cannot be walked (S3, no configuration) rules it out
too. So does any registry of the backend not deleted (failed ones too) whose effective retention
policy (the cluster's override, else the organization's default, else none) keeps untagged
manifests. Against a real registry's storage: tests/registries/test_collector.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.utils import timezone

from clusters.models import Organization
from registries.maintenance_selectors import delete_untagged_decision
from registries.models import Registry, State
from registries.retention import RetentionPolicy
from tests.clusters.factories import ClusterFactory, OrganizationFactory
from tests.registries.factories import RegistryFactory, add_backend

pytestmark = pytest.mark.django_db

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REFUSED_FOR_INDEX = (
    "Distribution 2.8's garbage-collect --delete-untagged deletes the members of tagged indexes, "
    "which then no longer pull (distribution#3004, distribution#3178; fixed in Distribution 3), "
    "so untagged manifests are kept"
)


@pytest.fixture
def config(tmp_path: Path) -> str:
    """A registry configuration on filesystem storage under ``tmp_path/storage``."""
    path = tmp_path / "config.yml"
    path.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
    )
    return str(path)


def ready(organization: Organization | None = None, **fields: object) -> Registry:
    cluster = ClusterFactory(organization=organization or OrganizationFactory(slug="acme"))
    registry: Registry = RegistryFactory(cluster=cluster, state=State.READY, **fields)
    return registry


def default_policy(organization: Organization, **fields: object) -> RetentionPolicy:
    return RetentionPolicy.objects.create(organization=organization, cluster=None, **fields)


def push(config: str, repository: str, tag: str | None, document: dict[str, object]) -> str:
    """Store ``document`` as a manifest of ``repository`` as Distribution does (its blob, and
    when ``tag`` is given that tag's current link to it); its digest."""
    root = Path(config).parent / "storage" / "docker" / "registry" / "v2"
    data = json.dumps(document).encode()
    hexdigest = hashlib.sha256(data).hexdigest()
    blob = root / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    manifests = root / "repositories" / repository / "_manifests"
    revision = manifests / "revisions" / "sha256" / hexdigest / "link"
    revision.parent.mkdir(parents=True, exist_ok=True)
    revision.write_text(f"sha256:{hexdigest}")
    if tag is not None:
        link = manifests / "tags" / tag / "current" / "link"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(f"sha256:{hexdigest}")
    return f"sha256:{hexdigest}"


def manifest(media_type: str | None = OCI_MANIFEST) -> dict[str, object]:
    document: dict[str, object] = {"schemaVersion": 2, "config": {}, "layers": []}
    return document | ({"mediaType": media_type} if media_type else {})


def index(media_type: str | None = OCI_INDEX) -> dict[str, object]:
    document: dict[str, object] = {"schemaVersion": 2, "manifests": []}
    return document | ({"mediaType": media_type} if media_type else {})


def test_safe_when_every_policy_deletes_untagged_and_no_index_is_tagged(
    config: str, django_assert_num_queries
) -> None:
    first, second = ready(), ready()
    default_policy(first.cluster.organization, delete_untagged=True)
    push(config, f"{first.namespace}/app", "v1", manifest())
    push(config, f"{first.namespace}/app", "v2", manifest(media_type=None))  # OCI may omit it
    # An index no tag points to is what --delete-untagged is for: it goes with its members.
    push(config, f"{second.namespace}/multi", None, index())

    with django_assert_num_queries(2):  # the registries, the policies
        decision = delete_untagged_decision(first.backend_id, config_path=config)

    assert decision == (
        True,
        "safe: no tagged image index in the backend's storage, and the retention policy of "
        "every one of its 2 registries deletes untagged manifests",
    )


def test_off_when_the_setting_is_off(settings, config: str) -> None:
    registry = ready()
    default_policy(registry.cluster.organization, delete_untagged=True)
    settings.REGISTRY_GC_DELETE_UNTAGGED = False

    assert delete_untagged_decision(registry.backend_id, config_path=config) == (
        False,
        "REGISTRY_GC_DELETE_UNTAGGED is off: untagged manifests are kept",
    )


def test_storage_that_cannot_be_walked_keeps_untagged_manifests(tmp_path: Path) -> None:
    registry = ready()
    default_policy(registry.cluster.organization, delete_untagged=True)
    s3 = tmp_path / "s3.yml"
    s3.write_text("version: 0.1\nstorage:\n  s3:\n    bucket: images\n    region: eu\n")

    assert delete_untagged_decision(registry.backend_id) == (
        False,
        "no registry configuration to read the backend's storage from (REGISTRY_GC_CONFIG or "
        "the backend's gc_config): whether it holds a tagged image index cannot be checked, so "
        "untagged manifests are kept",
    )
    assert delete_untagged_decision(registry.backend_id, config_path=str(s3)) == (
        False,
        "the backend's storage is not filesystem storage (S3 or another driver): its tags "
        "cannot be walked from here to check for tagged image indexes, so untagged manifests "
        "are kept",
    )


@pytest.mark.parametrize(
    "document",
    [index(), index(DOCKER_LIST), index(media_type=None), {"schemaVersion": 1}, None],
    ids=["oci-index", "docker-list", "index-without-type", "unknown", "blob-missing"],
)
def test_a_tagged_index_or_unknown_type_rules_it_out(
    config: str, document: dict[str, object] | None
) -> None:
    registry = ready()
    default_policy(registry.cluster.organization, delete_untagged=True)
    push(config, f"{registry.namespace}/app", "v1", manifest())
    digest = push(config, f"{registry.namespace}/multi", "v2", document or index())
    if document is None:  # the tag's manifest is not in the storage (or cannot be read)
        data = Path(config).parent.glob(f"storage/**/{digest.removeprefix('sha256:')}/data")
        next(data).unlink()

    assert delete_untagged_decision(registry.backend_id, config_path=config) == (
        False,
        f"{registry.namespace}/multi:v2 is a tagged image index (or of a type not yet known): "
        + REFUSED_FOR_INDEX,
    )


def test_every_registry_of_the_backend_but_deleted_ones_counts(config: str) -> None:
    registry = ready()
    organization = registry.cluster.organization
    default_policy(organization, delete_untagged=True)
    elsewhere = ready(backend=add_backend("eu-1"))  # another backend: its policy is not asked
    RetentionPolicy.objects.create(
        organization=organization, cluster=elsewhere.cluster, delete_untagged=False
    )
    failed = ready(organization=organization)
    RetentionPolicy.objects.create(
        organization=organization, cluster=failed.cluster, delete_untagged=False
    )
    Registry.objects.filter(pk=failed.pk).update(state=State.FAILED, url="")

    # A failed registry's images are still in the storage, and its policy keeps them.
    assert delete_untagged_decision(registry.backend_id, config_path=config) == (
        False,
        f"the retention policy of {failed.namespace} does not delete untagged manifests, "
        "so they are kept",
    )

    # Being deprovisioned without its cluster: no policy to ask, so it keeps.
    Registry.objects.filter(pk=failed.pk).update(
        state=State.DEPROVISIONING, deprovision_requested_at=timezone.now(), cluster=None
    )
    assert delete_untagged_decision(registry.backend_id, config_path=config) == (
        False,
        f"the retention policy of {failed.namespace} does not delete untagged manifests, "
        "so they are kept",
    )
    Registry.objects.filter(pk=failed.pk).update(state=State.DELETED, cluster=failed.cluster)
    assert delete_untagged_decision(registry.backend_id, config_path=config)[0] is True
    # A failed registry's tagged index is in the storage: it counts.
    Registry.objects.filter(pk=failed.pk).update(state=State.FAILED, deprovision_requested_at=None)
    RetentionPolicy.objects.filter(cluster=failed.cluster).update(delete_untagged=True)
    push(config, f"{failed.namespace}/multi", "v1", index())
    assert delete_untagged_decision(registry.backend_id, config_path=config) == (
        False,
        f"{failed.namespace}/multi:v1 is a tagged image index (or of a type not yet known): "
        + REFUSED_FOR_INDEX,
    )


def test_the_cluster_override_replaces_the_organization_default(config: str) -> None:
    keeps, deletes = ready(), ready()
    organization = keeps.cluster.organization
    default_policy(organization, delete_untagged=True)
    RetentionPolicy.objects.create(
        organization=organization, cluster=keeps.cluster, delete_untagged=False
    )
    assert delete_untagged_decision(keeps.backend_id, config_path=config) == (
        False,
        f"the retention policy of {keeps.namespace} does not delete untagged manifests, "
        "so they are kept",
    )

    RetentionPolicy.objects.filter(cluster=keeps.cluster).update(delete_untagged=True)
    RetentionPolicy.objects.filter(cluster=None).update(delete_untagged=False)
    assert delete_untagged_decision(keeps.backend_id, config_path=config) == (
        False,
        f"the retention policy of {deletes.namespace} does not delete untagged manifests, "
        "so they are kept",
    )

    RetentionPolicy.objects.create(
        organization=organization, cluster=deletes.cluster, delete_untagged=True
    )
    assert delete_untagged_decision(keeps.backend_id, config_path=config)[0] is True


def test_no_policy_or_a_disabled_one_keeps_untagged_manifests(config: str) -> None:
    registries = sorted((ready() for _ in range(5)), key=lambda r: r.namespace)
    policy = default_policy(registries[0].cluster.organization, delete_untagged=True, enabled=False)
    shown = ", ".join(r.namespace for r in registries[:3])
    backend = registries[0].backend_id

    assert delete_untagged_decision(backend, config_path=config) == (
        False,
        f"the retention policy of {shown} and 2 more does not delete untagged manifests, "
        "so they are kept",
    )

    policy.delete()
    assert delete_untagged_decision(backend, config_path=config)[0] is False
    default_policy(registries[0].cluster.organization, delete_untagged=True)
    assert delete_untagged_decision(backend, config_path=config)[0] is True
