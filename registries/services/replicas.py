"""The registry replicas' modes during a maintenance window (docs/retention.md#replicas).

Each replica's runner (``scripts/run-registry``) asks ``GET /registry/maintenance`` every
``REGISTRY_GC_REPLICA_POLL_SECONDS`` which mode to be in, telling the mode it is in; the answer
comes from the backend's active ``GarbageCollection`` (``READ_ONLY_STATES``: read-only). Before its
registry's first start the runner reports ``starting`` (it is told the mode to start in, and is
recorded in it at once, so a window never misses it); on a clean exit it reports ``stopped`` and
its row goes. A replica leaves no other way: one that went quiet blocks the window
(``replicas_blocking``) until it reports again, an operator deletes its row, or
``replicas_prune`` forgets it after ``REGISTRY_GC_REPLICA_FORGET_SECONDS``.

The switch rolls: a running replica not in the wanted mode is told it only when it is the first
(by name) of those not yet switched and heard from within ``REGISTRY_GC_SWITCH_TIMEOUT_SECONDS``;
the others keep their mode until it reports the new one, so pulls are served by the rest while
one replica restarts (one quiet replica delays the others by at most that timeout).

A report is a heartbeat, several a second across a fleet: it writes its row only when the mode
changed, or when ``seen_at`` is older than ``SEEN_REFRESH_SECONDS`` (enough to tell a live
replica from a gone one, ``REGISTRY_GC_REPLICA_STALE_SECONDS``). Only a change of mode (and a
registration, a deregistration, a prune) is audited: the heartbeats say nothing an operator did
or must know.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from registries.backends import Backend
from registries.maintenance import (
    READ_ONLY_STATES,
    GarbageCollection,
    RegistryReplica,
    ReplicaMode,
)
from registries.services.audit import platform_audit

logger = logging.getLogger(__name__)

#: A replica reporting the same mode rewrites ``seen_at`` at most this often (capped below a
#: third of ``REGISTRY_GC_REPLICA_STALE_SECONDS``, so a live replica never looks stale).
SEEN_REFRESH_SECONDS = 5.0
#: What a runner reports before its registry's first start, and on a clean exit.
STARTING, STOPPED = "starting", "stopped"
#: Every value a report may carry (the endpoint refuses any other).
REPORTED_MODES = (*ReplicaMode.values, STARTING, STOPPED)
#: A backend keeps at most this many replica rows: a report under a new name beyond it is
#: refused (``ReplicaLimit``), so a runner misnaming itself cannot fill the table.
MAX_REPLICAS_PER_BACKEND = 200


class ReplicaLimit(Exception):
    """A new replica's report refused: its backend already has ``MAX_REPLICAS_PER_BACKEND``."""


def _refresh_after() -> dt.timedelta:
    return dt.timedelta(
        seconds=min(SEEN_REFRESH_SECONDS, settings.REGISTRY_GC_REPLICA_STALE_SECONDS / 3)
    )


def replica_report(backend: Backend, *, name: str, mode: str) -> str:
    """Record that replica ``name`` of ``backend`` is in ``mode`` now (a ``REPORTED_MODES``
    value: the endpoint checked it), and answer the mode it should be in (``ReplicaLimit`` for a
    new name beyond the cap)."""
    if mode == STOPPED:
        _deregister(backend, name)
        return ReplicaMode.READ_WRITE
    wanted = replicas_wanted_mode(backend.id)
    recorded = wanted if mode == STARTING else mode
    now = timezone.now()
    replica = RegistryReplica.objects.filter(backend_id=backend.id, name=name).first()
    if replica is None:
        _register(backend, name, recorded)
    elif replica.mode != recorded:
        with transaction.atomic():
            RegistryReplica.objects.filter(pk=replica.pk).update(
                mode=recorded, seen_at=now, mode_changed_at=now
            )
            _audit_mode(backend, name, recorded, replica.mode)
    elif replica.seen_at < now - _refresh_after():
        RegistryReplica.objects.filter(pk=replica.pk).update(seen_at=now)
    if mode == STARTING or recorded == wanted:
        return wanted
    return wanted if _next_to_switch(backend.id, wanted) == name else recorded


def _register(backend: Backend, name: str, mode: str) -> None:
    now = timezone.now()
    try:
        with transaction.atomic():
            count = RegistryReplica.objects.filter(backend_id=backend.id).count()
            if count >= MAX_REPLICAS_PER_BACKEND:
                raise ReplicaLimit(
                    f"Backend {backend.name} already has {count} replicas, the most it keeps: "
                    "give each replica a stable name (--name), and delete the rows of replicas "
                    "gone for good in the console (or wait REGISTRY_GC_REPLICA_FORGET_SECONDS)."
                )
            RegistryReplica.objects.create(
                backend_id=backend.id, name=name, mode=mode, seen_at=now, mode_changed_at=now
            )
            _audit_mode(backend, name, mode, "")
    except IntegrityError:  # its previous report, racing this one, created it
        pass


def _deregister(backend: Backend, name: str) -> None:
    with transaction.atomic():
        replica = (
            RegistryReplica.objects.select_for_update()
            .filter(backend_id=backend.id, name=name)
            .first()
        )
        if replica is not None:
            replica.delete()
            _audit_mode(backend, name, STOPPED, replica.mode)


def replica_delete(replica: RegistryReplica) -> None:
    """An operator's deletion (the console) of a replica gone for good without deregistering (it
    crashed, its node was lost): windows stop waiting for it. A runner still alive registers again
    at its next report, so deleting a live one only costs an audit row."""
    with transaction.atomic():
        deleted, _ = RegistryReplica.objects.filter(pk=replica.pk).delete()
        if deleted:
            platform_audit(
                "REGISTRY_REPLICA_DELETED",
                "REGISTRY_BACKEND",
                replica.backend.name,
                {"replica": replica.name, "mode": replica.mode, "seen_at": replica.seen_at},
            )


def _next_to_switch(backend_id: int, wanted: str) -> str | None:
    """The replica whose turn it is to switch to ``wanted``: the first by name of those not in
    it and heard from within the switch timeout (a restart takes at most the drain and a start)."""
    since = timezone.now() - dt.timedelta(seconds=settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS)
    return (
        RegistryReplica.objects.filter(backend_id=backend_id, seen_at__gte=since)
        .exclude(mode=wanted)
        .order_by("name")
        .values_list("name", flat=True)
        .first()
    )


def _audit_mode(backend: Backend, name: str, mode: str, previous: str) -> None:
    logger.info(
        "registry.replica.mode",
        extra={"backend": backend.name, "replica": name, "mode": mode, "previous": previous},
    )
    platform_audit(
        "REGISTRY_REPLICA_MODE_CHANGED",
        "REGISTRY_BACKEND",
        backend.name,
        {"replica": name, "mode": mode, "previous": previous},
    )


def replicas_wanted_mode(backend_id: int) -> str:
    """``ReplicaMode.READ_ONLY`` while the backend's active collection is in a read-only state,
    else ``ReplicaMode.READ_WRITE``."""
    read_only = GarbageCollection.objects.filter(
        backend_id=backend_id, state__in=READ_ONLY_STATES
    ).exists()
    return ReplicaMode.READ_ONLY if read_only else ReplicaMode.READ_WRITE


def _stale_since() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=settings.REGISTRY_GC_REPLICA_STALE_SECONDS)


def replicas_live(backend_id: int) -> list[RegistryReplica]:
    """The backend's replicas heard from within ``REGISTRY_GC_REPLICA_STALE_SECONDS``."""
    return list(RegistryReplica.objects.filter(backend_id=backend_id, seen_at__gte=_stale_since()))


def replicas_blocking(backend_id: int, mode: str) -> list[str]:
    """The names of the backend's replicas not known to be in ``mode``: every row (a replica
    that has not deregistered) not in ``mode`` or not heard from within
    ``REGISTRY_GC_REPLICA_STALE_SECONDS``. A quiet replica blocks (fail closed): it may be
    serving writes while unable to reach the control plane."""
    rows = RegistryReplica.objects.filter(backend_id=backend_id)
    since = _stale_since()
    return sorted(r.name for r in rows if r.mode != mode or r.seen_at < since)


def replicas_prune() -> int:
    """Forget the replicas not heard from for ``REGISTRY_GC_REPLICA_FORGET_SECONDS`` (gone
    without deregistering: a crashed runner, a deleted pod); how many. One audit row per backend
    that lost any, naming them."""
    since = timezone.now() - dt.timedelta(seconds=settings.REGISTRY_GC_REPLICA_FORGET_SECONDS)
    forgotten = 0
    with transaction.atomic():
        old = RegistryReplica.objects.filter(seen_at__lt=since)
        by_backend: dict[str, list[str]] = {}
        for replica in old.select_related("backend").order_by("backend_id", "name"):
            by_backend.setdefault(replica.backend.name, []).append(replica.name)
        forgotten, _ = old.delete()
        for backend_name, names in by_backend.items():
            logger.info(
                "registry.replicas.pruned", extra={"backend": backend_name, "replicas": names}
            )
            platform_audit(
                "REGISTRY_REPLICAS_PRUNED",
                "REGISTRY_BACKEND",
                backend_name,
                {"replicas": names, "forget_seconds": settings.REGISTRY_GC_REPLICA_FORGET_SECONDS},
            )
    return forgotten
