"""``delete_untagged_decision``: garbage-collect's ``--delete-untagged`` only where it is safe
(docs/retention.md#untagged-manifests). Distribution 2.8 deletes the members of a tagged image
index with it, so any tagged index on the backend's ready registries rules it out; so does any
ready registry whose effective retention policy (the cluster's override, else the
organization's default, else none) keeps untagged manifests. Against the real inventory filled
by a usage scan: tests/registries/test_collector.py."""

from __future__ import annotations

import pytest

from clusters.models import Organization
from registries.inventory import Manifest
from registries.maintenance_selectors import delete_untagged_decision
from registries.models import Registry, State
from registries.retention import RetentionPolicy
from tests.clusters.factories import ClusterFactory, OrganizationFactory
from tests.registries.factories import RegistryFactory, add_backend, inventory_push

pytestmark = pytest.mark.django_db

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REFUSED_FOR_INDEX = (
    "Distribution 2.8's garbage-collect --delete-untagged deletes the members of tagged indexes, "
    "which then no longer pull (distribution#3004, distribution#3178; fixed in Distribution 3), "
    "so untagged manifests are kept"
)


def ready(organization: Organization | None = None, **fields: object) -> Registry:
    cluster = ClusterFactory(organization=organization or OrganizationFactory(slug="acme"))
    registry: Registry = RegistryFactory(cluster=cluster, state=State.READY, **fields)
    return registry


def default_policy(organization: Organization, **fields: object) -> RetentionPolicy:
    return RetentionPolicy.objects.create(organization=organization, cluster=None, **fields)


def push(registry: Registry, repository: str, tag: str, digest: str, media_type: str) -> None:
    inventory_push(registry, f"{registry.namespace}/{repository}", tag, digest, {"sha256:l": 10})
    Manifest.objects.filter(registry=registry, digest=digest).update(media_type=media_type)


def test_safe_when_every_policy_deletes_untagged_and_no_index_is_tagged(
    django_assert_num_queries,
) -> None:
    first, second = ready(), ready()
    default_policy(first.cluster.organization, delete_untagged=True)
    push(first, "app", "v1", "sha256:m1", "application/vnd.oci.image.manifest.v1+json")
    # An index no tag points to is what --delete-untagged is for: it goes with its members.
    push(second, "multi", "old", "sha256:i1", OCI_INDEX)
    second.repositories.get().tags.all().delete()

    with django_assert_num_queries(3):  # the registries, a tagged index, the policies
        decision = delete_untagged_decision(first.backend_id)

    assert decision == (
        True,
        "safe: no tagged image index on the backend's 2 ready registries, and every one's "
        "retention policy deletes untagged manifests",
    )


def test_off_when_the_setting_is_off(settings) -> None:
    registry = ready()
    default_policy(registry.cluster.organization, delete_untagged=True)
    settings.REGISTRY_GC_DELETE_UNTAGGED = False

    assert delete_untagged_decision(registry.backend_id) == (
        False,
        "REGISTRY_GC_DELETE_UNTAGGED is off: untagged manifests are kept",
    )


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST, ""])
def test_a_tagged_index_or_unknown_type_rules_it_out(media_type: str) -> None:
    registry = ready()
    default_policy(registry.cluster.organization, delete_untagged=True)
    push(registry, "app", "v1", "sha256:m1", "application/vnd.oci.image.manifest.v1+json")
    push(registry, "multi", "v2", "sha256:i1", media_type)

    assert delete_untagged_decision(registry.backend_id) == (
        False,
        f"{registry.namespace}/multi:v2 is a tagged image index (or of a type not yet known): "
        + REFUSED_FOR_INDEX,
    )


def test_only_ready_registries_of_the_backend_count() -> None:
    registry = ready()
    default_policy(registry.cluster.organization, delete_untagged=True)
    elsewhere = ready(backend=add_backend("eu-1"))
    push(elsewhere, "multi", "v1", "sha256:i1", OCI_INDEX)
    failed = ready()
    push(failed, "multi", "v1", "sha256:i2", OCI_INDEX)
    Registry.objects.filter(pk=failed.pk).update(state=State.FAILED, url="")

    allowed, reason = delete_untagged_decision(registry.backend_id)

    assert (allowed, reason.split(":")[0]) == (True, "safe")
    assert delete_untagged_decision(elsewhere.backend_id)[0] is False


def test_the_cluster_override_replaces_the_organization_default() -> None:
    keeps, deletes = ready(), ready()
    organization = keeps.cluster.organization
    default_policy(organization, delete_untagged=True)
    RetentionPolicy.objects.create(
        organization=organization, cluster=keeps.cluster, delete_untagged=False
    )
    assert delete_untagged_decision(keeps.backend_id) == (
        False,
        f"the retention policy of {keeps.namespace} does not delete untagged manifests, "
        "so they are kept",
    )

    RetentionPolicy.objects.filter(cluster=keeps.cluster).update(delete_untagged=True)
    RetentionPolicy.objects.filter(cluster=None).update(delete_untagged=False)
    assert delete_untagged_decision(keeps.backend_id) == (
        False,
        f"the retention policy of {deletes.namespace} does not delete untagged manifests, "
        "so they are kept",
    )

    RetentionPolicy.objects.create(
        organization=organization, cluster=deletes.cluster, delete_untagged=True
    )
    assert delete_untagged_decision(keeps.backend_id)[0] is True


def test_no_policy_or_a_disabled_one_keeps_untagged_manifests() -> None:
    registries = sorted((ready() for _ in range(5)), key=lambda r: r.namespace)
    policy = default_policy(registries[0].cluster.organization, delete_untagged=True, enabled=False)
    shown = ", ".join(r.namespace for r in registries[:3])

    assert delete_untagged_decision(registries[0].backend_id) == (
        False,
        f"the retention policy of {shown} and 2 more does not delete untagged manifests, "
        "so they are kept",
    )

    policy.delete()
    assert delete_untagged_decision(registries[0].backend_id)[0] is False
    default_policy(registries[0].cluster.organization, delete_untagged=True)
    assert delete_untagged_decision(registries[0].backend_id)[0] is True
