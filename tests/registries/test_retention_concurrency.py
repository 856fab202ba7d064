"""Concurrent starts of a registry's retention run give one run (the registry's row lock);
concurrent first writes of a policy give one row and an audit row each. Real threads, each with
its own PostgreSQL connection, started together on a barrier."""

from __future__ import annotations

import pytest

from clusters.audit import AuditEvent
from registries.models import State
from registries.retention import RetentionPolicy, RetentionRun
from registries.services import RetentionRunning, retention_policy_set
from registries.services.retention import runs
from tests.registries.factories import RegistryFactory
from tests.registries.test_concurrency import THREADS, run_together

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]


def test_concurrent_starts_give_one_running_run() -> None:
    registry = RegistryFactory(state=State.READY)

    def start(index: int) -> str:
        try:
            runs._run_start(registry, "manual")
        except RetentionRunning:
            return "refused"
        return "started"

    results = run_together(start)

    assert sorted(results) == ["refused"] * (THREADS - 1) + ["started"]
    assert list(RetentionRun.objects.values_list("registry", "state")) == [(registry.pk, "running")]


def test_concurrent_first_writes_of_a_default_give_one_policy() -> None:
    organization = RegistryFactory(state=State.READY).cluster.organization

    run_together(
        lambda index: retention_policy_set(organization=organization, values={"keep_newest": index})
    )

    assert RetentionPolicy.objects.count() == 1
    events = AuditEvent.objects.filter(type="ORGANIZATION_REGISTRY_RETENTION_POLICY_UPDATED")
    assert events.count() == THREADS
