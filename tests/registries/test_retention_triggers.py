"""What starts a retention run: a registry entering its soft or hard quota limit (the quota hook
enqueues ``registries.retention_run`` once committed), and the schedule's sweep over the ready
registries whose policy is enabled; and the task itself. The messages are read off the real
broker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from clusters.models import Organization
from registries import services
from registries.models import Registry, State
from registries.retention import (
    RUN_STALE_MARGIN_SECONDS,
    RetentionPolicy,
    RetentionRun,
    running,
)
from registries.services.quotas import quota_set
from registries.tasks import run_retention, sweep_retention
from tests.clusters.factories import ClusterFactory
from tests.registries.factories import RegistryFactory

pytestmark = pytest.mark.django_db

GB = 1000**3


def grow(registry: Registry, size: int) -> None:
    """Record a push of ``size`` bytes, through the inventory services (the quotas judge it)."""
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        assert locked is not None
        services.manifest_put(
            locked, digest=f"sha256:m{size}", media_type="", size=100,
            blobs={f"sha256:b{size}": size - 100},
        )  # fmt: skip
        services.tag_put(
            locked, repository=f"{registry.namespace}/base", tag=str(size),
            digest=f"sha256:m{size}", at=locked.created_at,
        )  # fmt: skip
        services.usage_refresh(locked)


@pytest.fixture
def registry() -> Registry:
    registry = RegistryFactory(state=State.READY)
    quota_set(organization=registry.cluster.organization, hard_bytes=10 * GB, soft_bytes=5 * GB)
    return registry


def test_entering_the_soft_then_the_hard_limit_enqueues_a_run_each(
    registry: Registry, broker_queue, django_capture_on_commit_callbacks
) -> None:
    RetentionPolicy.objects.create(organization=registry.cluster.organization, keep_newest=3)

    with django_capture_on_commit_callbacks(execute=True):
        grow(registry, GB)  # within
    within = broker_queue.drain()
    with django_capture_on_commit_callbacks(execute=True):
        grow(registry, 6 * GB)
    soft = broker_queue.drain()
    with django_capture_on_commit_callbacks(execute=True):
        grow(registry, 7 * GB - 1)  # still over the soft limit: no new crossing
        grow(registry, 4 * GB)
    hard = broker_queue.drain()

    assert within == []
    assert soft == [("registries.retention_run", (str(registry.pk), "soft_limit"))]
    assert hard == [("registries.retention_run", (str(registry.pk), "hard_limit"))]


@pytest.mark.parametrize("case", ["no policy", "disabled", "a run under way"])
def test_no_run_is_enqueued_without_an_enabled_policy_or_while_one_runs(
    registry: Registry, broker_queue, django_capture_on_commit_callbacks, case: str
) -> None:
    if case != "no policy":
        RetentionPolicy.objects.create(
            organization=registry.cluster.organization, keep_newest=3, enabled=case != "disabled"
        )
    if case == "a run under way":
        RetentionRun.objects.create(registry=registry, trigger="schedule")

    with django_capture_on_commit_callbacks(execute=True):
        grow(registry, 6 * GB)

    assert Registry.objects.get(pk=registry.pk).push_refused == ""
    assert broker_queue.drain() == []


def test_a_run_left_running_past_its_time_limit_does_not_block_the_quota_trigger(
    registry: Registry, broker_queue, django_capture_on_commit_callbacks, settings
) -> None:
    """One check of "a run under way" (``retention.running``) for the trigger and for a run's
    start: a run whose worker or web request died stays ``running`` in its row, and past the
    task's hard limit with a margin it no longer counts."""
    RetentionPolicy.objects.create(organization=registry.cluster.organization, keep_newest=3)
    limit = settings.REGISTRY_RETENTION_TIME_LIMIT_SECONDS + RUN_STALE_MARGIN_SECONDS
    started = timezone.now() - timedelta(seconds=limit + 5)
    RetentionRun.objects.create(registry=registry, trigger="schedule", started_at=started)
    just_alive = timezone.now() - timedelta(seconds=limit - 30)
    assert running(registry.pk) is None

    with django_capture_on_commit_callbacks(execute=True):
        grow(registry, 6 * GB)

    assert broker_queue.drain() == [("registries.retention_run", (str(registry.pk), "soft_limit"))]
    alive = RetentionRun.objects.create(registry=registry, trigger="manual", started_at=just_alive)
    assert running(registry.pk) == alive


def test_the_sweep_enqueues_each_ready_registry_whose_policy_is_enabled(
    broker_queue, django_capture_on_commit_callbacks
) -> None:
    acme = Organization.objects.create(slug="acme", name="Acme")
    other = Organization.objects.create(slug="other", name="Other")
    RetentionPolicy.objects.create(organization=acme, keep_newest=5)
    by_default = RegistryFactory(state=State.READY, cluster=ClusterFactory(organization=acme))
    opted_out = RegistryFactory(state=State.READY, cluster=ClusterFactory(organization=acme))
    RetentionPolicy.objects.create(organization=acme, cluster=opted_out.cluster, enabled=False)
    RegistryFactory(state=State.FAILED, cluster=ClusterFactory(organization=acme))
    RegistryFactory(state=State.READY, cluster=ClusterFactory(organization=other))  # no policy
    overridden = RegistryFactory(state=State.READY, cluster=ClusterFactory(organization=other))
    RetentionPolicy.objects.create(organization=other, cluster=overridden.cluster, keep_newest=1)

    with django_capture_on_commit_callbacks(execute=True):
        count = sweep_retention()

    assert count == 2
    assert sorted(broker_queue.drain()) == sorted(
        [
            ("registries.retention_run", (str(by_default.pk), "schedule")),
            ("registries.retention_run", (str(overridden.pk), "schedule")),
        ]
    )


def test_the_task_runs_the_policy_or_does_nothing(registry: Registry) -> None:
    RetentionPolicy.objects.create(organization=registry.cluster.organization, keep_newest=5)

    ran = run_retention(str(registry.pk), "schedule")
    busy = RetentionRun.objects.create(registry=registry, trigger="soft_limit")
    refused = run_retention(str(registry.pk), "schedule")
    busy.delete()
    Registry.objects.filter(pk=registry.pk).update(state=State.FAILED)

    assert ran == str(RetentionRun.objects.get().pk)
    assert refused is None
    assert run_retention(str(registry.pk), "schedule") is None
    assert run_retention("6f1c0f3e-0000-4000-8000-000000000000", "schedule") is None
    assert RetentionRun.objects.get().trigger == "schedule"
