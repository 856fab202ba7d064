"""Migration 0006 (canary sampling, the periodic selects' partial indexes, the lease's progress)
applies to a database with registries in it, and goes back."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from tests.clusters.factories import ClusterFactory

BEFORE = [("registries", "0005_job_credentials")]
AFTER = [("registries", "0006_canary_sampling_and_due_indexes")]


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)  # a new one reads what is applied now


@pytest.mark.django_db(transaction=True)
def test_0006_makes_every_existing_registry_due_for_a_canary_and_goes_back() -> None:
    try:
        old = migrate(BEFORE).loader.project_state(BEFORE).apps
        cluster = ClusterFactory(organization__slug="acme")  # the clusters app is not migrated
        old.get_model("registries", "Registry").objects.create(
            cluster_id=cluster.pk,
            state="ready",
            namespace="acme/0123456789ab",
            url="r.example/acme/0123456789ab",
            driver="distribution",
        )
        old.get_model("registries", "Lease").objects.create(name="reconciler")

        new = migrate(AFTER).loader.project_state(AFTER).apps

        registry = new.get_model("registries", "Registry").objects.get()
        assert registry.canary_due_at <= timezone.now()  # due at once: the next round's
        assert registry.canary_by_backend is False
        assert new.get_model("registries", "Lease").objects.get().progress == {}

        back = migrate(BEFORE).loader.project_state(BEFORE).apps
        assert back.get_model("registries", "Registry").objects.count() == 1
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
