"""``/v2/organizations/{org}/registry-quota`` (the organization's default) and
``.../clusters/{cluster}/registry/quota`` (a cluster's override, and its registry's usage
against the quota that applies)."""

from __future__ import annotations

import pytest
from django.db import transaction

from clusters.audit import AuditEvent
from clusters.models import ApiScope
from registries import services
from registries.models import Registry
from registries.quotas import RegistryQuota
from tests.api.test_registry_api import make_registry
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

ORG = "/registry-quota"
NO_QUOTA = {
    "set_by": None,
    "hard_bytes": None,
    "soft_bytes": None,
    "soft_bytes_set": None,
    "hard_tags": None,
}


def cluster_quota(cluster) -> str:
    return f"/clusters/{cluster.pk}/registry/quota"


def use(registry: Registry, size: int, tags: int = 1) -> None:
    """Give the registry ``size`` bytes in ``tags`` tags, through the inventory services."""
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        blob = {"sha256:blob": size - 10 * tags}
        for tag in range(tags):
            digest = f"sha256:m{tag}"
            services.manifest_put(locked, digest=digest, media_type="", size=10, blobs=blob)
            services.tag_put(
                locked,
                repository=f"{registry.namespace}/base",
                tag=str(tag),
                digest=digest,
                at=registry.created_at,
            )
        services.usage_refresh(locked)


def test_the_organizations_default_is_read_written_patched_and_deleted(api, cluster) -> None:
    registry = make_registry(cluster)
    use(registry, 900)

    empty = api.get(ORG)
    put = api.put(ORG, {"hard_bytes": 1000, "hard_tags": 10})
    patched = api.patch(ORG, {"soft_bytes": 950})
    deleted = api.delete(ORG)
    again = api.delete(ORG)

    assert empty.status_code == 200
    assert empty.json() == {
        **NO_QUOTA,
        "registries": {"unlimited": 1, "within": 0, "soft_exceeded": 0, "hard_exceeded": 0},
    }
    assert put.status_code == 200
    assert put.json() == {
        "set_by": "organization",
        "hard_bytes": 1000,
        "soft_bytes": 800,
        "soft_bytes_set": None,
        "hard_tags": 10,
        "registries": {"unlimited": 0, "within": 0, "soft_exceeded": 1, "hard_exceeded": 0},
    }
    assert patched.json()["registries"]["within"] == 1
    assert (patched.json()["soft_bytes"], patched.json()["hard_tags"]) == (950, 10)
    assert deleted.status_code == 204
    assert again.status_code == 204  # none left either way
    types = AuditEvent.objects.filter(
        organization=api.organization, type__contains="QUOTA"
    ).values_list("type", flat=True)
    assert sorted(set(types)) == [
        "ORGANIZATION_REGISTRY_QUOTA_UPDATED",
        "REGISTRY_QUOTA_SOFT_LIMIT_EXCEEDED",
        "REGISTRY_QUOTA_WITHIN_LIMITS",
    ]


def test_the_setting_is_shown_when_the_organization_sets_nothing(api, settings) -> None:
    settings.REGISTRY_QUOTA_DEFAULT_BYTES = 10**12

    body = api.get(ORG).json()

    assert (body["set_by"], body["hard_bytes"], body["soft_bytes"]) == (
        "setting",
        10**12,
        8 * 10**11,
    )


def test_a_clusters_quota_shows_its_registrys_usage_against_it(api, cluster) -> None:
    registry = make_registry(cluster)
    use(registry, 1200, tags=2)
    api.put(ORG, {"hard_bytes": 10**9})

    inherited = api.get(cluster_quota(cluster))
    override = api.put(cluster_quota(cluster), {"hard_bytes": 1000, "soft_bytes": 500})
    registry_conditions = api.get(f"/clusters/{cluster.pk}/registry").json()["conditions"]
    deleted = api.delete(cluster_quota(cluster))

    assert inherited.status_code == 200
    assert inherited.json()["set_by"] == "organization"
    assert inherited.json()["state"] == "within"
    assert inherited.json()["percent"] == 0.0
    assert override.status_code == 200
    assert override.json() == {
        "set_by": "cluster",
        "hard_bytes": 1000,
        "soft_bytes": 500,
        "soft_bytes_set": 500,
        "hard_tags": None,
        "used_bytes": 1200,
        "used_tags": 2,
        "percent": 120.0,
        "state": "hard_exceeded",
        "message": "Pushes are refused: quota exceeded: 1.2 kB of 1 kB used; delete tags or "
        "raise the quota.",
        "push_refused": "quota exceeded: 1.2 kB of 1 kB used; delete tags or raise the quota",
    }
    quota = [c for c in registry_conditions if c["type"] == "QuotaExceeded"]
    assert [(c["status"], c["reason"]) for c in quota] == [("True", "HardLimitExceeded")]
    assert deleted.status_code == 204
    assert api.get(cluster_quota(cluster)).json()["set_by"] == "organization"


def test_a_cluster_without_a_registry_has_a_quota_and_no_usage(api, cluster) -> None:
    body = api.put(cluster_quota(cluster), {"hard_tags": 5}).json()

    assert (body["used_bytes"], body["used_tags"], body["state"]) == (0, 0, "within")
    assert body["percent"] is None
    recorded = AuditEvent.objects.get(type="REGISTRY_QUOTA_UPDATED")
    assert (recorded.subject_uuid, recorded.subject_name) == ("", "Open Source")
    assert recorded.data == {"hard_tags": [None, 5], "cluster": str(cluster.pk)}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hard_bytes": -1}, "hard_bytes"),
        ({"hard_bytes": "ten"}, "hard_bytes"),
        ({"hard_tags": 2**63}, "hard_tags"),
        ({"hard_bytes": 10, "soft_bytes": 11}, "soft_bytes"),
        ({"hard_gb": 10}, "hard_gb"),
    ],
)
@pytest.mark.parametrize("path", ["org", "cluster"])
def test_bad_limits_are_422_and_write_nothing(api, cluster, body, field, path) -> None:
    response = api.put(ORG if path == "org" else cluster_quota(cluster), body)

    assert response.status_code == 422
    assert response.json()["message"].startswith("Validation failed")
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert not RegistryQuota.objects.exists()
    assert not AuditEvent.objects.filter(type__contains="QUOTA").exists()


def test_a_patch_is_checked_against_the_limits_it_keeps(api) -> None:
    api.put(ORG, {"hard_bytes": 1000})

    response = api.patch(ORG, {"soft_bytes": 2000})

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "soft_bytes", "message": "Must not exceed hard_bytes (1000)."}
    ]
    assert RegistryQuota.objects.get().soft_bytes is None


def test_scopes_and_organizations_are_enforced(make_api, api, other_api, cluster) -> None:
    reader = make_api(scopes=[ApiScope.READ_REGISTRIES])
    clusters_only = make_api(scopes=[ApiScope.READ_CLUSTERS, ApiScope.WRITE_CLUSTERS])

    assert reader.get(ORG).status_code == 200
    assert reader.put(ORG, {"hard_bytes": 1}).json() == {
        "message": "This API token needs the write_registries scope."
    }
    assert clusters_only.get(cluster_quota(cluster)).status_code == 403
    assert other_api.get(f"{api.base}{ORG}").status_code == 404
    assert other_api.get(
        f"/v2/organizations/other/clusters/{cluster.pk}/registry/quota"
    ).json() == {"message": "No cluster found"}
    assert not RegistryQuota.objects.exists()


def test_the_quota_reads_take_their_pinned_queries(api, cluster) -> None:
    make_registry(cluster)

    with expected_queries("registries-api:registry-quota"):
        assert api.get(ORG).status_code == 200
    with expected_queries("registries-api:registry-cluster-quota"):
        assert api.get(cluster_quota(cluster)).status_code == 200
