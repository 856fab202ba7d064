"""Row locks of the registries app. Callers never write ``select_for_update`` themselves.

Every transaction takes its row locks in one order (``clusters.locks`` has the clusters part):
organization -> cluster -> queue -> registry -> agent environment variable. Two transactions
that take the same rows in the same order wait for each other instead of deadlocking. The one
that matters here: writing a cluster's agent environment needs the cluster row too (the foreign
key check), so provisioning, which publishes the URL, takes the cluster before the registry, as
``cluster_delete`` does (``registry_lock_with_cluster``). ``tests/test_locks.py`` checks the order.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db.models import Subquery

from clusters.interface import Cluster, cluster_lock
from controlplane.compiled import CompiledSelect
from registries.inventory import RegistryNotification
from registries.models import Registry, RegistryQuerySet
from registries.selectors import registries_canary_due, registries_due
from registries.usage_selectors import registries_usage_scan_due

_registry_lock = CompiledSelect(
    Registry, lambda pk: Registry.objects.select_for_update().filter(pk=pk).order_by()[:1], "id"
)


def registry_lock(pk: uuid.UUID | str) -> Registry | None:
    """Lock the registry row ``pk`` until the transaction ends; None if there is none. (Every
    attempt takes it: compiled once, ``controlplane.compiled``.)"""
    found = _registry_lock(pk)
    return found[0] if found else None


def registry_lock_unless_held(pk: uuid.UUID | str) -> Registry | None:
    """Lock the registry row ``pk`` unless another transaction holds it (``SKIP LOCKED``); None
    then, or if there is none."""
    return Registry.objects.select_for_update(skip_locked=True).filter(pk=pk).first()


def registry_lock_with_cluster(registry: Registry) -> Registry | None:
    """Lock the registry's cluster row, then the registry row: the order ``cluster_delete``
    takes them in. Writing the cluster's agent environment needs the cluster row too (the
    foreign key check), so taking the registry first could deadlock with a deletion. The locked
    cluster is set on the registry it returns, so callers do not read it again."""
    cluster = None
    if registry.cluster_id is not None:
        cluster = cluster_lock(registry.cluster_id)
    locked = registry_lock(registry.pk)
    if locked is not None and cluster is not None and locked.cluster_id == cluster.pk:
        locked.cluster = cluster
    return locked


#: The cluster of the registry with this id, locked; the registry is only read, in a sub-select
#: (``FOR UPDATE`` locks the rows of the outer ``FROM`` alone). Its parameter is the registry's
#: id, a UUID as the cluster's own.
_registry_cluster_lock = CompiledSelect(
    Cluster,
    lambda pk: (
        Cluster.objects.select_for_update()
        .filter(pk=Subquery(Registry.objects.filter(pk=pk).values("cluster")[:1]))
        .order_by()[:1]
    ),
    "id",
)


def registry_lock_with_its_cluster(pk: uuid.UUID | str) -> tuple[Registry | None, Cluster | None]:
    """``registry_lock_with_cluster`` for a caller that has only the registry's id: its cluster
    row locked first, found by the registry's id in the same statement, then the registry row.
    Returns the locked registry (None if it is gone) and its locked cluster, None unless it is
    the cluster the locked registry belongs to (it has none, or it was detached meanwhile).

    Why not read the registry first and then lock its cluster: that read was one more round
    trip for every provisioning attempt (issue 15, P3/P4), and the registry row is locked and
    read again anyway, so its cluster is checked against the one locked."""
    found = _registry_cluster_lock(pk)
    locked = registry_lock(pk)
    cluster = found[0] if found else None
    if locked is None or cluster is None or locked.cluster_id != cluster.pk:
        return locked, None
    locked.cluster = cluster
    return locked, cluster


def registries_due_lock(*, now: datetime, interval: timedelta, limit: int) -> list[Registry]:
    """Lock up to ``limit`` registries that are due (``selectors.registries_due``), skipping the
    rows another transaction holds: an attempt is moving those on right now."""
    due = registries_due(now=now, interval=interval).select_for_update(skip_locked=True)
    return list(due[:limit])


def registries_canary_due_lock(*, now: datetime, limit: int) -> list[uuid.UUID]:
    """Lock up to ``limit`` ready registries whose canary is due
    (``selectors.registries_canary_due``), skipping the rows another transaction holds (a
    canary or a deletion is writing them). Returns their ids."""
    due = registries_canary_due(now=now).select_for_update(skip_locked=True)
    return list(due.values_list("pk", flat=True)[:limit])


def registries_usage_scan_due_lock(*, now: datetime, limit: int) -> list[uuid.UUID]:
    """Lock up to ``limit`` ready registries due for a usage scan
    (``usage_selectors.registries_usage_scan_due``), skipping the rows another transaction holds (an
    inventory write is applying to them). Returns their ids."""
    due = registries_usage_scan_due(now=now).select_for_update(skip_locked=True)
    return list(due.values_list("pk", flat=True)[:limit])


def registries_lock_batch(
    registries: RegistryQuerySet, *, after: uuid.UUID | None, limit: int
) -> list[Registry]:
    """Lock up to ``limit`` rows of ``registries`` after the key ``after``, in primary-key order,
    skipping the rows another transaction holds: a caller that writes many registries (a
    backend's canary) takes them a batch at a time, and leaves a busy row for its next round
    rather than wait for it."""
    if after is not None:
        registries = registries.filter(pk__gt=after)
    return list(registries.order_by("pk").select_for_update(skip_locked=True)[:limit])


def notifications_unapplied_lock(
    registry_id: uuid.UUID | str, *, limit: int
) -> list[RegistryNotification]:
    """Lock up to ``limit`` of the registry's notifications not applied yet, oldest first, skipping
    rows another transaction holds. Taken after the registry row (``registry_lock``), so that the
    events of one registry apply one batch at a time, in the order they were received."""
    return list(
        RegistryNotification.objects.filter(registry_id=registry_id, applied_at__isnull=True)
        .order_by("received_at", "pk")
        .select_for_update(skip_locked=True)[:limit]
    )


def registries_lock_of_clusters(cluster_ids: list[uuid.UUID]) -> list[Registry]:
    """Lock the registries of these clusters, in primary-key order (a quota write judges them
    again: ``services.quotas``)."""
    return list(
        Registry.objects.select_for_update().filter(cluster_id__in=cluster_ids).order_by("pk")
    )
