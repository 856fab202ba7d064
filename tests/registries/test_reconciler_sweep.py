"""The reconciler's sweeps (clusters owed a registry, published URLs) read a window of
``REGISTRY_RECONCILE_SWEEP`` cluster ids per pass, going on where the last pass stopped (kept on
the reconciler's lease), and come round to every cluster; the periodic selects read through
partial indexes that hold only the rows they are after."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from clusters.models import AgentEnvironmentVariable, Cluster, Queue
from registries import selectors
from registries.models import REGISTRY_URL_VARIABLE, Lease, Registry, State
from registries.reconciler import RECONCILER_LEASE, lease_acquire, lease_release
from registries.reconciler.lease import lease_progress
from tests.clusters.factories import ClusterFactory
from tests.registries.factories import RegistryFactory

pytestmark = pytest.mark.django_db


def clusters_written_around_the_services(count: int) -> list[Cluster]:
    """``count`` clusters with a hosted queue and no registry, by id."""
    clusters = [ClusterFactory(organization__slug="acme") for _ in range(count)]
    for cluster in clusters:
        Queue.objects.create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    return sorted(clusters, key=lambda cluster: str(cluster.pk))


def with_registry(clusters: list[Cluster]) -> set[str]:
    return {
        str(pk)
        for pk in Registry.objects.filter(cluster__in=clusters).values_list("cluster", flat=True)
    }


def swept_through() -> str | None:
    return lease_progress(RECONCILER_LEASE).get("clusters_swept_through")


def test_each_pass_sweeps_the_next_window_and_comes_round_to_every_cluster(
    reconcile, settings
) -> None:
    settings.REGISTRY_RECONCILE_SWEEP = 2
    clusters = clusters_written_around_the_services(5)
    keys = [str(cluster.pk) for cluster in clusters]

    seen = []
    for _ in range(3):
        reconcile()
        seen.append(with_registry(clusters))
    assert seen == [set(keys[:2]), set(keys[:4]), set(keys)]
    assert swept_through() is None  # the next pass starts at the first cluster again
    assert reconcile().created == []


def test_the_last_window_runs_to_the_end_and_the_next_starts_again(reconcile, settings) -> None:
    settings.REGISTRY_RECONCILE_SWEEP = 3
    clusters = clusters_written_around_the_services(4)

    reconcile()
    assert swept_through() == str(clusters[2].pk)
    reconcile()
    assert swept_through() is None
    late = clusters_written_around_the_services(1)  # anywhere in the key order
    assert reconcile().created + reconcile().created == [
        str(Registry.objects.get(cluster=late[0]).pk)
    ]


def test_a_window_with_more_drift_than_a_batch_goes_on_after_the_last_repaired(
    reconcile, settings
) -> None:
    settings.REGISTRY_RECONCILE_SWEEP = 100
    settings.REGISTRY_RECONCILE_BATCH = 2
    clusters = clusters_written_around_the_services(5)
    keys = [str(cluster.pk) for cluster in clusters]

    assert len(reconcile().created) == 2
    assert swept_through() == keys[1]
    assert len(reconcile().created) == 2
    assert swept_through() == keys[3]
    assert len(reconcile().created) == 1
    assert with_registry(clusters) == set(keys)


def test_unpublished_urls_are_swept_in_the_same_windows(reconcile, settings) -> None:
    settings.REGISTRY_RECONCILE_SWEEP = 2
    registries = sorted(
        (RegistryFactory(state=State.READY) for _ in range(3)), key=lambda r: str(r.cluster_id)
    )
    RegistryFactory(state=State.PENDING)  # its cluster counts in a window, nothing to publish
    windows = []
    for _ in range(3):
        windows.append(reconcile().republished)
    assert sorted(sum(windows, [])) == sorted(str(registry.pk) for registry in registries)
    published = AgentEnvironmentVariable.objects.filter(name=REGISTRY_URL_VARIABLE)
    assert published.count() == 3


def test_a_pass_that_lost_its_lease_does_not_move_the_sweep() -> None:
    assert lease_acquire(RECONCILER_LEASE, holder="first", ttl=timedelta(seconds=60))
    Lease.objects.filter(name=RECONCILER_LEASE).update(expires_at=timezone.now())  # expired
    assert lease_acquire(RECONCILER_LEASE, holder="second", ttl=timedelta(seconds=60))

    lease_release(RECONCILER_LEASE, holder="first", progress={"clusters_swept_through": "x"})
    assert lease_progress(RECONCILER_LEASE) == {}
    lease_release(RECONCILER_LEASE, holder="second", progress={"clusters_swept_through": "y"})
    assert lease_progress(RECONCILER_LEASE) == {"clusters_swept_through": "y"}


def test_every_window_of_a_small_table_is_the_whole_table() -> None:
    clusters_written_around_the_services(3)

    window = selectors.clusters_window(after=None, size=3)

    assert window.through is None
    assert selectors.clusters_owed_a_registry(window).count() == 3


# --- partial indexes ------------------------------------------------------------------------


def plan(queryset) -> str:
    """PostgreSQL's plan for ``queryset`` with sequential scans ruled out, so that a partial
    index that cannot serve the query shows as one (the planner prefers a sequential scan of a
    small table, whatever the indexes)."""
    sql, params = queryset.query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgresql
def test_the_periodic_selects_read_their_partial_indexes(settings) -> None:
    now = timezone.now()
    failed = selectors.registries_failed_transiently(before=now)
    selects = {
        "registry_attempt_due": selectors.registries_due(now=now, interval=timedelta(seconds=30)),
        "registry_failed_transient": failed.order_by()
        .values_list("driver", "backend_id")
        .distinct(),
        "registry_canary_due": selectors.registries_canary_due(now=now).values_list("pk")[:100],
        # A passing backend canary's batch of registries to restore.
        "registry_canary_failed_backend": Registry.objects.ready()
        .filter(backend_id=1, canary_ok=False, canary_by_backend=True)
        .order_by("pk")[:500],
    }
    for index, queryset in selects.items():
        assert index in plan(queryset), (index, plan(queryset))


@pytest.mark.postgresql
def test_the_partial_indexes_hold_only_the_rows_their_selects_are_after() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s",
            [Registry._meta.db_table, "registry\\_%"],
        )
        definitions = dict(cursor.fetchall())
    assert "WHERE ((state)::text = ANY" in definitions["registry_attempt_due"]
    assert "failure_transient" in definitions["registry_failed_transient"]
    assert "WHERE ((state)::text = 'ready'::text)" in definitions["registry_canary_due"]
    assert "canary_ok" in definitions["registry_canary_failed_backend"]
