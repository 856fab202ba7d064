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
    organization = registry.cluster.organization
    other = RegistryFactory(state=State.READY, cluster__organization__slug="other")

    soft_over_hard = operator.post(
        f"{QUOTAS}add/", {"organization": organization.pk, "hard_bytes": "10", "soft_bytes": "20"}
    )
    negative = operator.post(f"{QUOTAS}add/", {"organization": organization.pk, "hard_tags": "-1"})
    foreign_cluster = operator.post(
        f"{QUOTAS}add/", {"organization": organization.pk, "cluster": other.cluster.pk}
    )

    # The form shows the service's own messages (one rule: ``quota_validate``).
    assert soft_over_hard.status_code == negative.status_code == foreign_cluster.status_code == 200
    assert "Must not exceed hard_bytes (10)." in soft_over_hard.content.decode()
    assert (
        "Must be a whole number from 0 to 9223372036854775807, or null for no limit."
        in negative.content.decode()
    )
    assert "The cluster is not the organization&#x27;s." in foreign_cluster.content.decode()
    assert not RegistryQuota.objects.exists()
    assert not AuditEvent.objects.filter(type__contains="QUOTA").exists()


def test_a_bad_change_is_shown_on_the_form_and_leaves_the_quota_as_it_was(
    operator: Client, registry: Registry
) -> None:
    quota = quota_set(organization=registry.cluster.organization, hard_bytes=5000)
    written = AuditEvent.objects.filter(type__contains="QUOTA").count()

    changed = operator.post(
        f"{QUOTAS}{quota.pk}/change/", {"hard_bytes": "1000", "soft_bytes": "2000"}
    )

    assert changed.status_code == 200
    assert "Must not exceed hard_bytes (1000)." in changed.content.decode()
    quota.refresh_from_db()
    assert (quota.hard_bytes, quota.soft_bytes) == (5000, None)
    assert AuditEvent.objects.filter(type__contains="QUOTA").count() == written
    registry.refresh_from_db()
    assert registry.push_refused == ""  # 2000 of 5000: not judged against the refused 1000


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
