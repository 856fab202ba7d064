"""The registry replicas' modes during a maintenance window (docs/retention.md#replicas).

Each replica's runner (``scripts/run-registry``) asks ``GET /registry/maintenance`` every
``REGISTRY_GC_REPLICA_POLL_SECONDS`` which mode to be in, telling the mode it is in; the answer
comes from the backend's active ``GarbageCollection`` (``READ_ONLY_STATES``: read-only). The
window (``services.maintenance``) waits for ``replicas_live`` to report the mode it asked for.

A report is a heartbeat, several a second across a fleet: it writes its row only when the mode
changed, or when ``seen_at`` is older than ``SEEN_REFRESH_SECONDS`` (enough to tell a live
replica from a gone one, ``REGISTRY_GC_REPLICA_STALE_SECONDS``). Only a change of mode is
audited: the heartbeats say nothing an operator did or must know.
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


def _refresh_after() -> dt.timedelta:
    return dt.timedelta(
        seconds=min(SEEN_REFRESH_SECONDS, settings.REGISTRY_GC_REPLICA_STALE_SECONDS / 3)
    )


def replica_report(backend: Backend, *, name: str, mode: str) -> str:
    """Record that replica ``name`` of ``backend`` is in ``mode`` now, and answer the mode it
    should be in. ``mode`` is a ``ReplicaMode`` value (the endpoint checked it)."""
    now = timezone.now()
    replica = RegistryReplica.objects.filter(backend_id=backend.id, name=name).first()
    if replica is None:
        try:
            with transaction.atomic():
                RegistryReplica.objects.create(
                    backend_id=backend.id, name=name, mode=mode, seen_at=now, mode_changed_at=now
                )
                _audit_mode(backend, name, mode, "")
        except IntegrityError:  # its previous report, racing this one, created it
            pass
    elif replica.mode != mode:
        with transaction.atomic():
            RegistryReplica.objects.filter(pk=replica.pk).update(
                mode=mode, seen_at=now, mode_changed_at=now
            )
            _audit_mode(backend, name, mode, replica.mode)
    elif replica.seen_at < now - _refresh_after():
        RegistryReplica.objects.filter(pk=replica.pk).update(seen_at=now)
    return replicas_wanted_mode(backend.id)


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


def replicas_live(backend_id: int) -> list[RegistryReplica]:
    """The backend's replicas heard from within ``REGISTRY_GC_REPLICA_STALE_SECONDS``."""
    since = timezone.now() - dt.timedelta(seconds=settings.REGISTRY_GC_REPLICA_STALE_SECONDS)
    return list(RegistryReplica.objects.filter(backend_id=backend_id, seen_at__gte=since))


def replicas_blocking(backend_id: int, mode: str) -> list[str]:
    """The names of the backend's replicas that are not known to be in ``mode``: every replica
    that has not deregistered and is not reporting ``mode`` (a quiet one included: fail closed).
    Placeholder until the replicas work lands: the live replicas not in ``mode``."""
    return sorted(replica.name for replica in replicas_live(backend_id) if replica.mode != mode)
