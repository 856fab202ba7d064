"""Garbage collection in a maintenance window, per backend (docs/retention.md#garbage-collection).

``collection_request`` records a ``GarbageCollection`` (one active per backend) and enqueues
``registries.garbage_collection`` once it commits; the worker runs ``collection_run``:

1. ``draining``: the backend's ``pushes_refused_until`` is set, so the token endpoint refuses
   pushes with a "retry after" (``registries.views.maintenance_refusal``); uploads in flight
   finish during ``REGISTRY_GC_DRAIN_SECONDS`` (at least ``HOT_CACHE_SECONDS``: the other web
   processes' cached credentials, which carry the window's end, are that old at most);
2. ``read_only``: the replicas' runners are told to restart read-only; the window waits until
   every live replica reports it (``REGISTRY_GC_SWITCH_TIMEOUT_SECONDS``);
3. ``collecting``: storage measured, abandoned uploads purged, ``garbage-collect`` run;
4. ``restoring``: read-write again; the refusal is cleared once the replicas report it, or after
   the timeout. Always, whatever failed before (``finally``): a window never outlives its run;
5. ``verifying``: every kept tag checked (``services.verification``); storage and usage after.

A worker killed mid-window cannot run its ``finally``: ``collections_end_stale`` (beat, with the
schedule) ends a window older than ``REGISTRY_GC_TIME_LIMIT_SECONDS`` and clears its refusal.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from controlplane import hotcache, metrics
from controlplane.celery import app as celery_app
from registries.backends import backends_forget
from registries.drivers.collector import CollectorError, garbage_collect
from registries.drivers.storage import storage_bytes, uploads_purge
from registries.maintenance import (
    ACTIVE_STATES,
    CollectionState,
    CollectionTrigger,
    GarbageCollection,
    ReplicaMode,
)
from registries.maintenance_selectors import delete_untagged_decision
from registries.models import DEFAULT_BACKEND, Registry, RegistryBackend, State
from registries.registry_config_rules import upload_purging_age
from registries.services.audit import platform_audit
from registries.services.replicas import replicas_live
from registries.services.verification import collection_verify

logger = logging.getLogger(__name__)

COLLECTION_TASK = "registries.garbage_collection"
#: A collection still queued this long after it was asked for lost its message: sent again.
REQUEUE_AFTER_SECONDS = 60.0
#: Progress from ``garbage-collect``'s output is saved at most this often.
PROGRESS_SAVE_SECONDS = 1.0
#: Until a backend has a collection of its own to go by: what a collection is expected to take.
COLLECT_ESTIMATE_SECONDS = 300.0
NO_REPLICA = (
    "no replica of backend {backend} reports to the control plane: run each replica with "
    "scripts/run-registry (docs/retention.md#replicas)"
)

Progress = Callable[[GarbageCollection], None]


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


class WindowFailed(Exception):
    """The window cannot go on; the message says why and what to do."""


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
            _enqueue(collection)
    logger.info(
        "registry.gc.requested",
        extra={"backend": locked.name, "collection": str(collection.pk), "trigger": trigger},
    )
    return collection


def _enqueue(collection: GarbageCollection) -> None:
    collection_id = str(collection.pk)

    def send() -> None:
        try:
            celery_app.tasks[COLLECTION_TASK].delay(collection_id)
        except Exception:  # the schedule sends a queued one again (REQUEUE_AFTER_SECONDS)
            logger.exception("registry.gc.enqueue_failed", extra={"collection": collection_id})

    transaction.on_commit(send)


def collection_run(
    collection_id: str, *, on_progress: Progress | None = None
) -> GarbageCollection | None:
    """Run the queued collection ``collection_id`` (the module's docstring); None when it is gone
    or no longer queued (a message delivered twice). ``on_progress`` sees every saved step."""
    now = timezone.now()
    claimed = GarbageCollection.objects.filter(
        pk=collection_id, state=CollectionState.QUEUED
    ).update(state=CollectionState.DRAINING, started_at=now, state_changed_at=now)
    if not claimed:
        return None
    collection = GarbageCollection.objects.select_related("backend").get(pk=collection_id)
    window = _Window(collection, on_progress)
    with transaction.atomic():
        platform_audit(
            "GARBAGE_COLLECTION_STARTED",
            "REGISTRY_BACKEND",
            collection.backend.name,
            {"collection": collection_id},
        )
    window.run()
    return window.collection


class _Window:
    """One run of ``collection_run``: the collection, its steps and their progress."""

    def __init__(self, collection: GarbageCollection, on_progress: Progress | None) -> None:
        self.collection = collection
        self.backend = collection.backend
        self.config = collection_config(self.backend)
        self.on_progress = on_progress
        self.saved_at = 0.0
        self.opened_at = time.monotonic()
        self.window_seconds: float | None = None
        self.opened = False  # pushes were refused: the window must be closed

    def run(self) -> None:
        error = ""
        where = {"backend": self.backend.name, "collection": str(self.collection.pk)}
        try:
            self.collect()
        except (WindowFailed, CollectorError) as exc:  # said to the operator: no traceback
            logger.warning("registry.gc.failed", extra={**where, "error": str(exc)})
            error = str(exc)
        except Exception as exc:  # every failure ends the window the same way, then is shown
            logger.exception("registry.gc.failed", extra=where)
            error = str(exc) or type(exc).__name__
        finally:
            self.restore()
        if not error:
            try:
                self.verify()
            except Exception as exc:
                logger.exception("registry.gc.verify_failed", extra={"backend": self.backend.name})
                error = f"Verification did not finish: {exc}"
        self.finish(error)

    def collect(self) -> None:
        if not self.config:
            raise WindowFailed(
                f"No registry configuration to collect backend {self.backend.name}'s garbage "
                "with: set REGISTRY_GC_CONFIG (the default backend) or the backend's gc_config "
                "to the configuration file its replicas run on."
            )
        drain = max(settings.REGISTRY_GC_DRAIN_SECONDS, settings.HOT_CACHE_SECONDS)
        switch = settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS
        refuse_pushes(self.backend.pk, drain + 2 * switch + self.collect_estimate())
        self.opened = True
        self.step(CollectionState.DRAINING, "pushes refused; uploads in flight finish", 0, None)
        self.sleep(drain, "pushes refused; uploads in flight finish")
        self.step(CollectionState.READ_ONLY, "replicas going read-only", 0, None)
        self.switch(ReplicaMode.READ_ONLY)
        self.step(CollectionState.COLLECTING, "measuring storage", 0, None)
        self.collection.storage_bytes_before = storage_bytes(self.config)
        self.collection.usage_bytes_before = backend_usage_bytes(self.backend.pk)
        self.progress("purging abandoned uploads", 0, None)
        self.collection.uploads_purged = uploads_purge(self.config, older_than=upload_purging_age())
        wanted, reason = delete_untagged_decision(self.backend.pk)
        self.collection.delete_untagged, self.collection.delete_untagged_reason = wanted, reason
        lines = [0]

        def on_line(line: str) -> None:
            lines[0] += 1
            self.progress(f"garbage-collect: {line.strip()[:200]}", lines[0], None, quiet=True)

        result = garbage_collect(self.config, delete_untagged=wanted, on_line=on_line)
        self.collection.blobs_deleted = result.blobs_deleted
        self.collection.manifests_deleted = result.manifests_deleted
        self.collection.output = result.output_tail
        self.progress(
            f"garbage-collect: {result.blobs_deleted} blobs and {result.manifests_deleted} "
            "manifests deleted", lines[0], lines[0],
        )  # fmt: skip
        self.collection.save()

    def collect_estimate(self) -> float:
        """The last collection of the backend's duration, else ``COLLECT_ESTIMATE_SECONDS``."""
        last = (
            GarbageCollection.objects.filter(
                backend=self.backend, finished_at__isnull=False, started_at__isnull=False
            )
            .order_by("-created_at")
            .values_list("started_at", "finished_at")
            .first()
        )
        if last is None or last[0] is None or last[1] is None:
            return COLLECT_ESTIMATE_SECONDS
        return (last[1] - last[0]).total_seconds()

    def switch(self, mode: str) -> None:
        """Wait until every live replica reports ``mode``; ``WindowFailed`` naming the ones that
        do not within ``REGISTRY_GC_SWITCH_TIMEOUT_SECONDS`` (or when none reports at all)."""
        deadline = time.monotonic() + settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS
        message = self.collection.progress.get("message", "")
        while True:
            live = replicas_live(self.backend.pk)
            if not live:
                raise WindowFailed(NO_REPLICA.format(backend=self.backend.name))
            behind = [replica.name for replica in live if replica.mode != mode]
            self.progress(message, len(live) - len(behind), len(live), quiet=bool(behind))
            if not behind:
                return
            if time.monotonic() > deadline:
                raise WindowFailed(
                    f"Replica(s) {', '.join(behind)} of backend {self.backend.name} did not "
                    f"report {mode} within {settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS:g} s: "
                    "check that their runner (scripts/run-registry) reaches the control plane "
                    "and that the registry restarts (its log); then run the collection again."
                )
            time.sleep(min(1.0, settings.REGISTRY_GC_REPLICA_POLL_SECONDS / 2))

    def restore(self) -> None:
        """Read-write again, then pushes granted again: whatever happened before (nothing to do
        for a window that failed before it refused anything)."""
        if not self.opened:
            return
        try:
            refuse_pushes(self.backend.pk, settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS + 5)
            self.step(CollectionState.RESTORING, "replicas going read-write", 0, None)
            try:
                self.switch(ReplicaMode.READ_WRITE)
            except WindowFailed as exc:  # pushes reach the replicas that did switch back
                logger.warning("registry.gc.restore_incomplete", extra={"error": str(exc)})
        finally:
            refuse_pushes(self.backend.pk, None)
            self.window_seconds = time.monotonic() - self.opened_at

    def verify(self) -> None:
        self.step(CollectionState.VERIFYING, "verifying every kept tag", 0, None)

        def progress(done: int, total: int) -> None:
            self.progress("verifying every kept tag", done, total)

        collection_verify(self.collection, progress=progress)
        self.collection.refresh_from_db()
        self.collection.storage_bytes_after = storage_bytes(self.config)
        self.collection.usage_bytes_after = backend_usage_bytes(self.backend.pk)

    def finish(self, error: str) -> None:
        state = CollectionState.FAILED if error else CollectionState.SUCCEEDED
        if not error and self.collection.missing:
            state = CollectionState.FAILED
            error = (
                f"Verification found {self.collection.missing} manifest(s) or blob(s) missing "
                "after the collection: see the failures below and the registries' Verified "
                "condition; push the affected tags again."
            )
        self.collection.error = error
        self.step(state, error or "done", 1, 1, finished=True)
        freed = self.collection.freed_bytes
        metrics.GARBAGE_COLLECTIONS.labels(self.backend.name, state).inc()
        if self.window_seconds is not None:
            metrics.GARBAGE_COLLECTION_WINDOW_SECONDS.labels(state).observe(self.window_seconds)
        if freed is not None and freed > 0:
            metrics.GARBAGE_COLLECTION_FREED_BYTES.labels(self.backend.name).inc(freed)
        logger.info(
            "registry.gc.finished",
            extra={"backend": self.backend.name, "state": state, "freed_bytes": freed},
        )

    def step(
        self, state: str, message: str, done: int, total: int | None, *, finished: bool = False
    ) -> None:
        """Save the state (and, once ``finished``, the end and its audit row) with progress."""
        now = timezone.now()
        self.collection.state, self.collection.state_changed_at = state, now
        self.collection.progress = {"message": message, "done": done, "total": total}
        with transaction.atomic():
            if finished:
                self.collection.finished_at = now
                platform_audit(
                    "GARBAGE_COLLECTION_FINISHED",
                    "REGISTRY_BACKEND",
                    self.backend.name,
                    _summary(self.collection),
                )
            self.collection.save()
        self.saved_at = time.monotonic()
        if self.on_progress is not None:
            self.on_progress(self.collection)

    def progress(self, message: str, done: int, total: int | None, *, quiet: bool = False) -> None:
        """Save the progress of the current state (``quiet``: at most every
        ``PROGRESS_SAVE_SECONDS``, for steps that report often)."""
        shown = {"message": message, "done": done, "total": total}
        if shown == self.collection.progress:
            return
        self.collection.progress = shown
        if quiet and time.monotonic() - self.saved_at < PROGRESS_SAVE_SECONDS:
            return
        self.collection.save(update_fields=["progress"])
        self.saved_at = time.monotonic()
        if self.on_progress is not None:
            self.on_progress(self.collection)

    def sleep(self, seconds: float, message: str) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.progress(message, int(seconds - left), int(seconds))
            time.sleep(min(1.0, left))


def _summary(collection: GarbageCollection) -> dict[str, Any]:
    return {
        "collection": str(collection.pk),
        "state": collection.state,
        "freed_bytes": collection.freed_bytes,
        "blobs_deleted": collection.blobs_deleted,
        "uploads_purged": collection.uploads_purged,
        "missing": collection.missing,
        "error": collection.error[:500],
    }


def refuse_pushes(backend_id: int, seconds: float | None) -> None:
    """Refuse pushes on the backend for ``seconds`` from now (None: grant them again). The token
    endpoint reads it with each credential's namespace, kept ``HOT_CACHE_SECONDS`` per process:
    this process drops its caches now, the others see it within that (the drain lasts longer)."""
    until = None if seconds is None else timezone.now() + dt.timedelta(seconds=seconds)
    RegistryBackend.objects.filter(pk=backend_id).update(pushes_refused_until=until)
    backends_forget()
    hotcache.clear()


def backend_usage_bytes(backend_id: int) -> int:
    """The usage of the backend's registries, summed (each counts its unique blobs)."""
    total = (
        Registry.objects.filter(backend_id=backend_id)
        .exclude(state=State.DELETED)
        .aggregate(total=Sum("usage_bytes"))["total"]
    )
    return int(total or 0)


def collections_schedule() -> list[GarbageCollection]:
    """Celery beat: end stale windows, send lost messages again, and ask for a scheduled
    collection of each backend whose last one (or its creation) is older than
    ``REGISTRY_GC_INTERVAL_SECONDS`` (0: none scheduled)."""
    collections_end_stale()
    requeue_before = timezone.now() - dt.timedelta(seconds=REQUEUE_AFTER_SECONDS)
    for queued in GarbageCollection.objects.filter(
        state=CollectionState.QUEUED, created_at__lt=requeue_before
    ):
        celery_app.tasks[COLLECTION_TASK].delay(str(queued.pk))
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


def collections_end_stale() -> int:
    """Fail the windows whose worker died (older than ``REGISTRY_GC_TIME_LIMIT_SECONDS``) and
    grant pushes again on their backends, and on any backend refusing pushes with no window."""
    limit = timezone.now() - dt.timedelta(seconds=settings.REGISTRY_GC_TIME_LIMIT_SECONDS + 60)
    ended = 0
    for collection in GarbageCollection.objects.filter(
        state__in=ACTIVE_STATES, created_at__lt=limit
    ).select_related("backend"):
        window = _Window(collection, None)
        window.collection.error = (
            f"The window was still {collection.state} after "
            f"{settings.REGISTRY_GC_TIME_LIMIT_SECONDS} s: its worker stopped (crashed or "
            "killed at the time limit). Pushes are granted again; run the collection again."
        )
        refuse_pushes(collection.backend_id, None)
        window.finish(window.collection.error)
        ended += 1
    orphans = RegistryBackend.objects.filter(pushes_refused_until__isnull=False).exclude(
        collections__state__in=ACTIVE_STATES
    )
    for backend_id in orphans.values_list("pk", flat=True):
        refuse_pushes(backend_id, None)
    return ended
