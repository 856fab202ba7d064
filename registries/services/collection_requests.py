"""Asking for a garbage collection, and what its window and its stale repair share
(docs/retention.md#garbage-collection): the configuration it runs on, the push refusal, the
audit row and metrics of its end, the backend's usage. The window is ``services.maintenance``;
the schedule and the stale repair are ``services.maintenance_schedule``."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from controlplane import hotcache, metrics
from controlplane.celery import app as celery_app
from registries.backends import backends_forget
from registries.maintenance import ACTIVE_STATES, CollectionState, GarbageCollection
from registries.models import DEFAULT_BACKEND, Registry, RegistryBackend, State
from registries.services.audit import platform_audit

logger = logging.getLogger("registries.services.maintenance")

COLLECTION_TASK = "registries.garbage_collection"


class CollectionActive(Exception):
    """A backend's window is held by another collection; the message names it."""

    def __init__(self, running: GarbageCollection, backend: str) -> None:
        self.running = running
        super().__init__(
            f"A garbage collection of backend {backend} is already {running.state} (collection "
            f"{running.pk}, asked for at {running.created_at:%Y-%m-%d %H:%M:%S} UTC by "
            f"{running.requested_by or 'the schedule'}): wait for it to end "
            f"(`manage.py registry_gc {backend} --wait` follows it)."
        )


def collection_config(backend: RegistryBackend) -> str:
    """The registry configuration ``garbage-collect`` runs on for ``backend`` ("": none)."""
    if backend.gc_config:
        return backend.gc_config
    return settings.REGISTRY_GC_CONFIG if backend.name == DEFAULT_BACKEND else ""


def collection_request(
    backend: RegistryBackend, *, trigger: str, actor: str, enqueue: bool = True
) -> GarbageCollection:
    """Ask for a garbage collection of ``backend``; ``CollectionActive`` when one holds its
    window already. ``enqueue=False``: the caller runs it (``manage.py registry_gc --wait``)."""
    with transaction.atomic():
        locked = RegistryBackend.objects.select_for_update().get(pk=backend.pk)
        running = GarbageCollection.objects.filter(backend=locked, state__in=ACTIVE_STATES).first()
        if running is not None:
            raise CollectionActive(running, locked.name)
        try:
            with transaction.atomic():
                collection = GarbageCollection.objects.create(
                    backend=locked, trigger=trigger, requested_by=actor[:255]
                )
        except IntegrityError as exc:  # the constraint, should a lock ever be skipped
            running = GarbageCollection.objects.get(backend=locked, state__in=ACTIVE_STATES)
            raise CollectionActive(running, locked.name) from exc
        platform_audit(
            "GARBAGE_COLLECTION_REQUESTED",
            "REGISTRY_BACKEND",
            locked.name,
            {"collection": str(collection.pk), "trigger": trigger},
        )
        if enqueue:
            collection_enqueue(str(collection.pk))
    logger.info(
        "registry.gc.requested",
        extra={"backend": locked.name, "collection": str(collection.pk), "trigger": trigger},
    )
    return collection


def collection_enqueue(collection_id: str) -> None:
    """Send the collection's task once the transaction commits (now, outside one)."""

    def send() -> None:
        try:
            celery_app.tasks[COLLECTION_TASK].delay(collection_id)
        except Exception:  # the repair beat sends a queued one again
            logger.exception("registry.gc.enqueue_failed", extra={"collection": collection_id})

    transaction.on_commit(send)


def collection_audit_end(collection: GarbageCollection) -> None:
    """The audit row of a collection's end, in the transaction that ends it."""
    platform_audit(
        "GARBAGE_COLLECTION_FINISHED",
        "REGISTRY_BACKEND",
        collection.backend.name,
        {
            "collection": str(collection.pk),
            "state": collection.state,
            "freed_bytes": collection.freed_bytes,
            "blobs_deleted": collection.blobs_deleted,
            "uploads_purged": collection.uploads_purged,
            "missing": collection.missing,
            "error": collection.error[:500],
        },
    )


def collection_observe(collection: GarbageCollection, window_seconds: float | None) -> None:
    """The metrics and the log line of a collection that ended."""
    backend, state, freed = collection.backend.name, collection.state, collection.freed_bytes
    metrics.GARBAGE_COLLECTIONS.labels(backend, state).inc()
    if window_seconds is not None:
        metrics.GARBAGE_COLLECTION_WINDOW_SECONDS.labels(state).observe(window_seconds)
    if freed is not None and freed > 0:
        metrics.GARBAGE_COLLECTION_FREED_BYTES.labels(backend).inc(freed)
    logger.info(
        "registry.gc.finished", extra={"backend": backend, "state": state, "freed_bytes": freed}
    )


def refuse_pushes(backend_id: int, seconds: float | None) -> None:
    """Refuse pushes on the backend for ``seconds`` from now (None: grant them again). The token
    endpoint reads it with each credential's namespace, kept ``HOT_CACHE_SECONDS`` per process:
    this process drops its caches now, the others see it within that (the drain lasts longer)."""
    until = None if seconds is None else timezone.now() + dt.timedelta(seconds=seconds)
    RegistryBackend.objects.filter(pk=backend_id).update(pushes_refused_until=until)
    backends_forget()
    hotcache.clear()


def refusal_extend(backend_id: int, seconds: float) -> None:
    """Keep the backend's refusal at least ``seconds`` ahead (a collection longer than its
    estimate); a backend granting pushes is left alone."""
    floor = timezone.now() + dt.timedelta(seconds=seconds)
    if RegistryBackend.objects.filter(pk=backend_id, pushes_refused_until__lt=floor).update(
        pushes_refused_until=floor
    ):
        backends_forget()
        hotcache.clear()


#: Until a backend has a succeeded collection to go by: what a collection is expected to take.
COLLECT_ESTIMATE_SECONDS = 300.0


def collect_estimate(backend_id: int) -> float:
    """The backend's last succeeded collection's duration, else ``COLLECT_ESTIMATE_SECONDS``
    (a failed one may have stopped early: it says nothing of how long one takes)."""
    last = (
        GarbageCollection.objects.filter(
            backend_id=backend_id,
            state=CollectionState.SUCCEEDED,
            finished_at__isnull=False,
            started_at__isnull=False,
        )
        .order_by("-created_at")
        .values_list("started_at", "finished_at")
        .first()
    )
    if last is None or last[0] is None or last[1] is None:
        return COLLECT_ESTIMATE_SECONDS
    return (last[1] - last[0]).total_seconds()


def backend_usage_bytes(backend_id: int) -> int:
    """The usage of the backend's registries, summed (each counts its unique blobs)."""
    total = (
        Registry.objects.filter(backend_id=backend_id)
        .exclude(state=State.DELETED)
        .aggregate(total=Sum("usage_bytes"))["total"]
    )
    return int(total or 0)
