"""The schedule of garbage collections and the repair of windows whose worker stopped
(docs/retention.md#garbage-collection).

``collections_schedule`` (beat, every ``REGISTRY_GC_INTERVAL_SECONDS``) asks for the collections
that are due. ``collections_repair`` (beat, every minute: the replicas of a backend whose worker
died must not stay read-only for long) ends the windows whose heartbeat stopped, grants pushes
again where no window holds them, and sends a queued collection's lost message again.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.celery import app as celery_app
from registries.maintenance import (
    ACTIVE_STATES,
    CollectionState,
    CollectionTrigger,
    GarbageCollection,
)
from registries.models import RegistryBackend
from registries.services.collection_requests import (
    COLLECTION_TASK,
    CollectionActive,
    collection_audit_end,
    collection_config,
    collection_observe,
    collection_request,
    refuse_pushes,
)
from registries.services.replicas import replicas_prune

logger = logging.getLogger("registries.services.maintenance")

#: A collection still queued this long after it was asked for lost its message: sent again.
REQUEUE_AFTER_SECONDS = 60.0
#: A running window whose heartbeat (``GarbageCollection.heartbeat_at``, written every few
#: seconds while it progresses) is older than this lost its worker. Longer than any step that
#: writes nothing (measuring a large storage, one registry's verification).
STALE_HEARTBEAT_SECONDS = 600.0


def collections_schedule() -> list[GarbageCollection]:
    """Ask for a scheduled collection of each backend whose last one (or its creation) is older
    than ``REGISTRY_GC_INTERVAL_SECONDS`` (0: none scheduled)."""
    interval = settings.REGISTRY_GC_INTERVAL_SECONDS
    if interval <= 0:
        return []
    due_before = timezone.now() - dt.timedelta(seconds=interval)
    requested = []
    for backend in RegistryBackend.objects.order_by("name"):
        last = backend.collections.order_by("-created_at").values_list("created_at", flat=True)
        if (last.first() or backend.created_at) > due_before:
            continue
        if not collection_config(backend):
            logger.warning("registry.gc.unconfigured", extra={"backend": backend.name})
            continue
        try:
            requested.append(
                collection_request(backend, trigger=CollectionTrigger.SCHEDULE, actor="schedule")
            )
        except CollectionActive:
            continue
    return requested


def collections_repair() -> int:
    """Beat, every minute: end stale windows (``collections_end_stale``), send the message of
    a collection queued for longer than ``REQUEUE_AFTER_SECONDS`` again (a message delivered
    twice finds it no longer queued), and forget the replicas gone for longer than
    ``REGISTRY_GC_REPLICA_FORGET_SECONDS`` (``replicas_prune``). How many windows were ended."""
    ended = collections_end_stale()
    replicas_prune()
    requeue_before = timezone.now() - dt.timedelta(seconds=REQUEUE_AFTER_SECONDS)
    for queued in GarbageCollection.objects.filter(
        state=CollectionState.QUEUED, created_at__lt=requeue_before
    ).values_list("pk", flat=True):
        try:
            celery_app.tasks[COLLECTION_TASK].delay(str(queued))
        except Exception:  # the broker is down: the next beat tries again
            logger.exception("registry.gc.enqueue_failed", extra={"collection": str(queued)})
    return ended


def collections_end_stale() -> int:
    """Fail the windows whose worker stopped: running with a heartbeat older than
    ``STALE_HEARTBEAT_SECONDS`` (one started before heartbeats: by its last change of state),
    or still queued after ``REGISTRY_GC_TIME_LIMIT_SECONDS`` (no maintenance worker took it);
    grant pushes again on their backends, and on any backend refusing pushes with no window.
    Each end is a conditional UPDATE on the state and heartbeat read: a worker that wrote
    meanwhile keeps its window (one that did not finds its row taken at its next write)."""
    now = timezone.now()
    stale = now - dt.timedelta(seconds=STALE_HEARTBEAT_SECONDS)
    never_taken = now - dt.timedelta(seconds=settings.REGISTRY_GC_TIME_LIMIT_SECONDS)
    beat_stopped = Q(heartbeat_at__lt=stale) | Q(
        heartbeat_at__isnull=True, state_changed_at__lt=stale
    )
    running = GarbageCollection.objects.filter(beat_stopped, state__in=ACTIVE_STATES).exclude(
        state=CollectionState.QUEUED
    )
    queued = GarbageCollection.objects.filter(
        state=CollectionState.QUEUED, created_at__lt=never_taken
    )
    ended = 0
    for collection in [*running.select_related("backend"), *queued.select_related("backend")]:
        ended += _end_stale(collection, now)
    orphans = RegistryBackend.objects.filter(pushes_refused_until__isnull=False).exclude(
        collections__state__in=ACTIVE_STATES
    )
    for backend_id in orphans.values_list("pk", flat=True):
        refuse_pushes(backend_id, None)
    return ended


def _end_stale(collection: GarbageCollection, now: dt.datetime) -> int:
    if collection.state == CollectionState.QUEUED:
        error = (
            f"No maintenance worker took the collection within "
            f"{settings.REGISTRY_GC_TIME_LIMIT_SECONDS} s: start a worker on the maintenance "
            "queue (deploy/README.md), then run the collection again."
        )
    else:
        error = (
            f"The window's worker stopped while {collection.state} (no heartbeat for "
            f"{STALE_HEARTBEAT_SECONDS:g} s: crashed, killed at the time limit, or stalled). "
            "Pushes are granted again; run the collection again."
        )
    with transaction.atomic():
        ended = GarbageCollection.objects.filter(
            pk=collection.pk, state=collection.state, heartbeat_at=collection.heartbeat_at
        ).update(
            state=CollectionState.FAILED,
            error=error,
            progress={"message": error, "done": 1, "total": 1},
            state_changed_at=now,
            finished_at=now,
        )
        if not ended:
            return 0
        collection.refresh_from_db()
        collection_audit_end(collection)
    refuse_pushes(collection.backend_id, None)
    collection_observe(collection, None)
    return 1
