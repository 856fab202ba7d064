"""The console's registry quotas (``registries.quota_admin``): added, changed and deleted through
the services (validation, audit row, the registries judged again), and shown on registries."""

from __future__ import annotations

import pytest
from django.test import Client

from clusters.audit import AuditEvent
from registries.models import Registry, State
from registries.quotas import RegistryQuota
from registries.services.quotas import quota_set
from tests.api.test_registry_quota_api import use
from tests.registries.factories import RegistryFactory

pytestmark = pytest.mark.django_db
QUOTAS = "/admin/registries/registryquota/"


@pytest.fixture
def registry() -> Registry:
    registry = RegistryFactory(state=State.READY)
    use(registry, 2000)
    return registry


def test_adding_changing_and_deleting_a_default_goes_through_the_services(
    operator: Client, registry: Registry
) -> None:
    organization = registry.cluster.organization

    added = operator.post(
        f"{QUOTAS}add/", {"organization": organization.pk, "hard_bytes": "1000"}, follow=True
    )
    quota = RegistryQuota.objects.get()
    registry.refresh_from_db()
    refused = registry.push_refused
    changed = operator.post(f"{QUOTAS}{quota.pk}/change/", {"hard_bytes": "5000"}, follow=True)
    registry.refresh_from_db()
    listed = operator.get(QUOTAS).content.decode()
    operator.post(f"{QUOTAS}{quota.pk}/delete/", {"post": "yes"}, follow=True)

    assert added.status_code == changed.status_code == 200
    assert refused == "quota exceeded: 2 kB of 1 kB used; delete tags or raise the quota"
    assert registry.push_refused == ""
    assert "the organization&#x27;s clusters (default)" in listed
    assert '<td class="field-hard">5 kB</td>' in listed
    assert not RegistryQuota.objects.exists()
    assert list(
        AuditEvent.objects.filter(type="ORGANIZATION_REGISTRY_QUOTA_UPDATED")
        .order_by("occurred_at")
        .values_list("data", flat=True)
    ) == [
        {"hard_bytes": [None, 1000]},
        {"hard_bytes": [1000, 5000]},
        {"hard_bytes": [5000, None], "deleted": True},
    ]


def test_a_bad_quota_is_refused_on_the_form_and_writes_nothing(
    operator: Client, registry: Registry
) -> None:
    other = RegistryFactory(state=State.READY, cluster__organization__slug="other")

    soft_over_hard = operator.post(
        f"{QUOTAS}add/",
        {
            "organization": registry.cluster.organization.pk,
            "hard_bytes": "10",
            "soft_bytes": "20",
        },
    )
    foreign_cluster = operator.post(
        f"{QUOTAS}add/",
        {"organization": registry.cluster.organization.pk, "cluster": other.cluster.pk},
    )

    assert "Must not exceed the hard limit (10)." in soft_over_hard.content.decode()
    assert "The cluster is not the organization&#x27;s." in foreign_cluster.content.decode()
    assert not RegistryQuota.objects.exists()
    assert not AuditEvent.objects.filter(type__contains="QUOTA").exists()


def test_a_registry_shows_its_quota_condition_and_usage(
    operator: Client, registry: Registry
) -> None:
    quota_set(organization=registry.cluster.organization, cluster=registry.cluster, hard_bytes=1000)

    listed = operator.get("/admin/registries/registry/").content.decode()
    detail = operator.get(f"/admin/registries/registry/{registry.pk}/change/").content.decode()

    assert "HardLimitExceeded" in listed
    assert (
        "Pushes are refused: quota exceeded: 2 kB of 1 kB used; delete tags or raise the quota. "
        "(set by the cluster)" in detail
    )
