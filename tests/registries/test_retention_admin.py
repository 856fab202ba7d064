"""The console's retention policies (``registries.retention_admin``): added, changed and deleted
through the services (validation, audit rows), a registry's dry run page with what its policy
deletes and keeps and why, its "run cleanup now" button and action, and the runs, read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin import site
from django.test import Client
from django.utils import timezone

from clusters.audit import AuditEvent
from registries.models import Registry, State
from registries.retention import RetentionPolicy, RetentionRun
from tests.registries.factories import RegistryFactory, inventory_push

pytestmark = pytest.mark.django_db
POLICIES = "/admin/registries/retentionpolicy/"


@pytest.fixture
def registry() -> Registry:
    registry = RegistryFactory(state=State.READY)
    for tag, days in (("old", 40), ("v1", 40), ("fresh", 0.1)):
        inventory_push(
            registry, f"{registry.namespace}/base", tag, f"sha256:{tag}", {f"sha256:l{tag}": 10},
            at=timezone.now() - timedelta(days=days),
        )  # fmt: skip
    return registry


def form(organization_id: int, **values: str) -> dict[str, object]:
    return {
        "organization": organization_id, "enabled": "on", "recent_hours": "24",
        "protected_tags": '["latest", "v*"]', **values,
    }  # fmt: skip


def test_the_models_are_in_the_console() -> None:
    assert site.is_registered(RetentionPolicy)
    assert site.is_registered(RetentionRun)


def test_adding_changing_and_deleting_a_policy_goes_through_the_services(
    operator: Client, registry: Registry
) -> None:
    organization = registry.cluster.organization

    added = operator.post(f"{POLICIES}add/", form(organization.pk, keep_newest="3"))
    policy = RetentionPolicy.objects.get()
    changed = operator.post(
        f"{POLICIES}{policy.pk}/change/",
        form(organization.pk, delete_older_than_days="30", unless_pulled_within_days="7"),
    )
    policy.refresh_from_db()
    listed = operator.get(POLICIES).content.decode()
    deleted = operator.post(f"{POLICIES}{policy.pk}/delete/", {"post": "yes"})

    assert (added.status_code, changed.status_code, deleted.status_code) == (302, 302, 302)
    assert (policy.keep_newest, policy.delete_older_than_days) == (None, 30)
    assert policy.unless_pulled_within_days == 7
    assert "the organization&#x27;s clusters (default)" in listed
    assert not RetentionPolicy.objects.exists()
    events = AuditEvent.objects.filter(type="ORGANIZATION_REGISTRY_RETENTION_POLICY_UPDATED")
    assert events.count() == 3


def test_a_bad_policy_is_shown_on_the_form_and_nothing_is_written(
    operator: Client, registry: Registry
) -> None:
    organization = registry.cluster.organization

    response = operator.post(
        f"{POLICIES}add/", form(organization.pk, protected_tags='["v*", ""]', keep_newest="2")
    )
    orphan = operator.post(f"{POLICIES}add/", form(organization.pk, unless_pulled_within_days="3"))

    assert response.status_code == 200
    assert "Each pattern must be a non-empty text" in response.content.decode()
    assert "Only applies with delete_older_than_days" in orphan.content.decode()
    assert not RetentionPolicy.objects.exists()
    assert not AuditEvent.objects.filter(type__contains="RETENTION").exists()


def test_the_dry_run_page_lists_deletions_and_kept_tags_with_reasons(
    operator: Client, registry: Registry
) -> None:
    RetentionPolicy.objects.create(
        organization=registry.cluster.organization, delete_older_than_days=30
    )

    page = operator.get(f"/admin/registries/registry/{registry.pk}/change/").content.decode()
    dry_run = operator.get(f"{POLICIES}dry-run/{registry.pk}/")

    assert f'href="{POLICIES}dry-run/{registry.pk}/"' in page
    assert dry_run.status_code == 200
    text = dry_run.content.decode()
    assert "<td>base</td><td>old</td>" in text
    assert "pushed 40 days ago (more than 30)" in text
    assert "<td>base</td><td>v1</td><td>protected by the pattern &#x27;v*&#x27;</td>" in text
    assert "fresh" not in text  # neither selected nor kept by a protection
    assert 'value="Run cleanup now"' in text
    assert not RetentionRun.objects.exists()


def test_the_dry_run_page_of_a_registry_without_a_policy(operator: Client) -> None:
    registry = RegistryFactory(state=State.READY)

    text = operator.get(f"{POLICIES}dry-run/{registry.pk}/").content.decode()

    assert "none: nothing is deleted" in text
    assert "Run cleanup now" not in text


def test_running_cleanup_from_the_console_records_a_run(
    operator: Client, registry: Registry
) -> None:
    """Nothing planned for deletion here (the deletion itself: the integration test)."""
    RetentionPolicy.objects.create(organization=registry.cluster.organization, keep_newest=5)

    response = operator.post(f"{POLICIES}dry-run/{registry.pk}/")
    run = RetentionRun.objects.get()
    action = operator.post(
        "/admin/registries/registry/",
        {"action": "cleanup_now", "_selected_action": [str(registry.pk)]},
        follow=True,
    )

    assert response.status_code == 302
    assert response["Location"] == f"/admin/registries/retentionrun/{run.pk}/change/"
    assert (run.trigger, run.state, run.deleted) == ("manual", "succeeded", [])
    assert RetentionRun.objects.count() == 2
    assert "0 tags deleted, 0 B freed, 0 error(s)." in action.content.decode()
    assert operator.get("/admin/registries/retentionrun/").status_code == 200
    assert operator.get(f"/admin/registries/retentionrun/{run.pk}/change/").status_code == 200
