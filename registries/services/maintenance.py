"""Garbage collection in a maintenance window, per backend (docs/retention.md#garbage-collection).

``collection_request`` records a ``GarbageCollection`` (one active per backend) and enqueues
``registries.garbage_collection`` once it commits; the worker runs ``collection_run``:

1. ``draining``: the backend's ``pushes_refused_until`` is set, so the token endpoint refuses
   pushes with a "retry after" (``registries.views.maintenance_refusal``); uploads in flight
   finish during ``REGISTRY_GC_DRAIN_SECONDS`` (at least ``HOT_CACHE_SECONDS``: the other web
   processes' cached credentials, which carry the window's end, are that old at most);
2. ``read_only``: the replicas' runners are told to restart read-only; the window waits until
   no replica blocks (``services.replicas.replicas_blocking``: fail closed, a quiet one blocks);
3. ``collecting``: storage measured, abandoned uploads purged, ``--delete-untagged`` decided from
   the storage itself, every replica checked read-only, ``garbage-collect`` run, the replicas
   checked again, the deleted blobs dropped from the registry's blob-descriptor cache;
4. ``restoring``: read-write again; the refusal is cleared once the replicas report it, or after
   the timeout. Always, whatever failed before: a window never outlives its run;
5. ``verifying``: every kept tag checked (``services.verification``), whenever ``garbage-collect``
   was started (a failed one may have deleted blobs already); storage and usage after.

Every write of the worker is a conditional UPDATE on the state it expects, with a heartbeat
(``heartbeat_at``) and, while pushes are refused, the refusal extended: a window whose worker
died is ended by ``services.maintenance_schedule.collections_end_stale`` (beat, every minute)
once its heartbeat stops. A thread of the window beats every ``HEARTBEAT_SECONDS`` whatever the
step (garbage-collect, measuring a large storage print nothing for minutes); should the repair
end a window still running (a stalled worker), the beat finds the row taken away, kills the
collector, and the worker's next write raises ``WindowTaken``: it stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registries.drivers.collector import CollectorError, CollectorResult, garbage_collect
from registries.drivers.storage import blob_cache_forget, storage_bytes, uploads_purge
from registries.maintenance import CollectionState, GarbageCollection, ReplicaMode
from registries.maintenance_selectors import delete_untagged_decision
from registries.registry_config_rules import upload_purging_age
from registries.services.audit import platform_audit
from registries.services.collection_requests import (
    backend_usage_bytes,
    collect_estimate,
    collection_audit_end,
    collection_config,
    collection_observe,
    refusal_extend,
    refuse_pushes,
)
from registries.services.maintenance_heartbeat import Heartbeat
from registries.services.replicas import replicas_blocking, replicas_live
from registries.services.verification import collection_verify

logger = logging.getLogger(__name__)

#: Progress from ``garbage-collect``'s output is saved at most this often.
PROGRESS_SAVE_SECONDS = 1.0
#: The running worker writes the row's ``heartbeat_at`` at least this often while it progresses.
HEARTBEAT_SECONDS = 5.0
#: While pushes are refused, each heartbeat keeps the refusal at least this far ahead of the
#: switch back (two switch timeouts), so that it never expires in the middle of a collection.
REFUSAL_MARGIN_SECONDS = 60.0
#: The share of ``REGISTRY_GC_TIME_LIMIT_SECONDS`` kept for the verification after the collector.
VERIFY_SHARE = 0.25
NO_REPLICA = (
    "no replica of backend {backend} reports to the control plane: run each replica with "
    "scripts/run-registry (docs/retention.md#replicas)"
)
NOT_READ_ONLY = (
    "Replica(s) {names} of backend {backend} were not known to be read-only right {when} "
    "garbage-collect: the collection was stopped so that no push races it. If a replica is gone "
    "for good, delete its row in the console (Registry replicas); then run the collection again."
)

Progress = Callable[[GarbageCollection], None]


class WindowFailed(Exception):
    """The window cannot go on; the message says why and what to do."""


class WindowTaken(Exception):
    """The collection's row is no longer in the state this worker left it in: the stale repair
    ended it (its heartbeat had stopped). The worker stops without touching it further."""


def collector_timeout(elapsed: float) -> float:
    """How long ``garbage-collect`` may run when the window has lasted ``elapsed`` seconds: what
    is left of ``REGISTRY_GC_TIME_LIMIT_SECONDS`` once the switch back and the verification
    (``VERIFY_SHARE`` of it) are set aside, so that the collector is stopped, not the task."""
    limit = settings.REGISTRY_GC_TIME_LIMIT_SECONDS
    reserved = settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS + limit * VERIFY_SHARE
    return limit - elapsed - reserved


def collection_run(
    collection_id: str, *, on_progress: Progress | None = None
) -> GarbageCollection | None:
    """Run the queued collection ``collection_id`` (the module's docstring); None when it is gone
    or no longer queued (a message delivered twice). ``on_progress`` sees every saved step."""
    now = timezone.now()
    claimed = GarbageCollection.objects.filter(
        pk=collection_id, state=CollectionState.QUEUED
    ).update(state=CollectionState.DRAINING, started_at=now, state_changed_at=now, heartbeat_at=now)
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
        self.saved_at = time.monotonic()
        self.opened_at = time.monotonic()
        self.window_seconds: float | None = None
        self.opened = False  # pushes were refused: the window must be closed
        self.collector_started = False  # storage may have changed: verify
        self.taken = False  # the stale repair ended the row: touch nothing more
        self.lock = threading.Lock()  # the heartbeat reads the state a step is changing
        self.heartbeat = Heartbeat(collection, self.lock, self.refusal_keep, HEARTBEAT_SECONDS)
        self.ended = self.heartbeat.ended  # the row was taken: the collector is killed

    def run(self) -> None:
        """Collect, restore, verify (once the collector started), finish: each step runs
        whatever the one before raised (a soft time limit, Ctrl-C included); an interruption
        skips the verification and is raised again once the collection is finished. The
        heartbeat beats meanwhile."""
        with self.heartbeat:
            self.steps()

    def steps(self) -> None:
        error, interrupted = self.attempt(self.collect, "registry.gc.failed")
        more, stopped = self.attempt(self.restore, "registry.gc.restore_failed")
        error, interrupted = error or more, interrupted or stopped
        if self.collector_started and not self.taken and interrupted is None:
            more, interrupted = self.attempt(self.verify, "registry.gc.verify_failed")
            error = error or (more and f"Verification did not finish: {more}")
        if not self.taken:
            self.finish(error)
        if interrupted is not None and not isinstance(interrupted, Exception):
            raise interrupted

    def attempt(self, step: Callable[[], None], event: str) -> tuple[str, BaseException | None]:
        """Run ``step``: its failure said for the operator, and the interruption if it was one
        (a soft time limit or a ``BaseException``: what follows must be short)."""
        where = {"backend": self.backend.name, "collection": str(self.collection.pk)}
        try:
            step()
        except WindowTaken:
            self.taken = True
            logger.warning("registry.gc.taken", extra=where)
            return "", None
        except (WindowFailed, CollectorError) as exc:  # said to the operator: no traceback
            logger.warning(event, extra={**where, "error": str(exc)})
            return str(exc), None
        except SoftTimeLimitExceeded as exc:
            logger.warning(event, extra={**where, "error": "soft time limit"})
            limit = settings.REGISTRY_GC_TIME_LIMIT_SECONDS
            return f"The collection reached its time limit ({limit} s): raise it.", exc
        except Exception as exc:  # every failure ends the window the same way, then is shown
            logger.exception(event, extra=where)
            return str(exc) or type(exc).__name__, None
        except BaseException as exc:  # Ctrl-C on `registry_gc --wait`, a worker shutting down
            logger.warning(event, extra={**where, "error": type(exc).__name__})
            return f"The collection was interrupted ({type(exc).__name__}).", exc
        return "", None

    def collect(self) -> None:
        if not self.config:
            raise WindowFailed(
                f"No registry configuration to collect backend {self.backend.name}'s garbage "
                "with: set REGISTRY_GC_CONFIG (the default backend) or the backend's gc_config "
                "to the configuration file its replicas run on."
            )
        drain = max(settings.REGISTRY_GC_DRAIN_SECONDS, settings.HOT_CACHE_SECONDS)
        switch = settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS
        refuse_pushes(self.backend.pk, drain + 2 * switch + collect_estimate(self.backend.pk))
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
        self.progress("deciding on --delete-untagged from the storage", 0, None)
        wanted, reason = delete_untagged_decision(self.backend.pk, config_path=self.config)
        self.collection.delete_untagged, self.collection.delete_untagged_reason = wanted, reason
        timeout = collector_timeout(time.monotonic() - self.opened_at)
        if timeout <= 0:
            raise WindowFailed(
                "REGISTRY_GC_TIME_LIMIT_SECONDS leaves no time for garbage-collect once the "
                "drain, the switches and the verification are set aside: raise it."
            )
        self.check_read_only(replicas_blocking(self.backend.pk, ReplicaMode.READ_ONLY), "before")
        lines = [0]

        def on_line(line: str) -> None:
            lines[0] += 1
            self.progress(f"garbage-collect: {line.strip()[:200]}", lines[0], None, quiet=True)

        self.collector_started = True
        try:
            result = garbage_collect(
                self.config, delete_untagged=wanted, on_line=on_line, timeout=timeout,
                stop=self.ended,
            )  # fmt: skip
        except BaseException as exc:  # what it had deleted leaves the cache all the same
            forgot = self.forget(getattr(exc, "deleted_blobs", ()))[1]
            if forgot and isinstance(exc, CollectorError):
                exc.args = (f"{exc}\n{forgot}",)
            if self.ended.is_set():
                raise WindowTaken(str(self.collection.pk)) from exc
            raise
        blocking = replicas_blocking(self.backend.pk, ReplicaMode.READ_ONLY)
        self.check_read_only(blocking, "after", self.record(result, lines[0]))

    def forget(self, deleted: tuple[str, ...]) -> tuple[int, str]:
        """``blob_cache_forget``: entries dropped, and its failure ("": none), never hiding more."""
        try:
            return blob_cache_forget(self.config, deleted), ""
        except Exception as exc:
            logger.warning("registry.gc.cache_forget_failed", extra={"error": str(exc)})
            return 0, str(exc)

    def check_read_only(self, blocking: list[str], when: str, also: str = "") -> None:
        """``WindowFailed`` naming the replicas not known to be read-only ``when`` (right before
        or right after ``garbage-collect``): one that (re)started read-write meanwhile, or
        went quiet, may have taken a push the collector races; with ``also`` (another failure)
        after it, or ``also`` alone."""
        names, backend = ", ".join(blocking), self.backend.name
        said = NOT_READ_ONLY.format(names=names, backend=backend, when=when) if blocking else ""
        if said or also:
            raise WindowFailed("\n".join(message for message in (said, also) if message))

    def record(self, result: CollectorResult, lines: int) -> str:
        """Keep what ``garbage-collect`` did, and drop the deleted blobs from the registry's
        blob-descriptor cache while nothing can push them (distribution#2945: a cached
        descriptor makes a later push of the same layer skip its upload); the failure to drop
        them, if any (the window fails with it once the replicas are checked)."""
        self.collection.blobs_deleted = result.blobs_deleted
        self.collection.manifests_deleted = result.manifests_deleted
        self.collection.output = result.output_tail
        forgotten, forgot = self.forget(result.deleted_blobs)
        self.write(self.collection.state)
        self.progress(
            f"garbage-collect: {result.blobs_deleted} blobs and {result.manifests_deleted} "
            f"manifests deleted; {forgotten} cache entries dropped", lines, lines,
        )  # fmt: skip
        return forgot

    def switch(self, mode: str) -> None:
        """Wait until no replica blocks ``mode`` (``replicas_blocking``); ``WindowFailed`` naming
        the ones that still do after ``REGISTRY_GC_SWITCH_TIMEOUT_SECONDS`` without one more of
        them switching (the replicas switch one at a time: each gets the whole timeout), or when
        none reports at all."""
        deadline = time.monotonic() + settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS
        message = self.collection.progress.get("message", "")
        left: int | None = None
        while True:
            blocking = replicas_blocking(self.backend.pk, mode)
            if left is not None and len(blocking) < left:
                deadline = time.monotonic() + settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS
            left = len(blocking)
            names = {replica.name for replica in replicas_live(self.backend.pk)} | set(blocking)
            if not names:
                raise WindowFailed(NO_REPLICA.format(backend=self.backend.name))
            self.progress(message, len(names) - len(blocking), len(names), quiet=bool(blocking))
            if not blocking:
                return
            if time.monotonic() > deadline:
                raise WindowFailed(
                    f"Replica(s) {', '.join(blocking)} of backend {self.backend.name} did not "
                    f"report {mode} within {settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS:g} s: "
                    "check that their runner (scripts/run-registry) reaches the control plane "
                    "and that the registry restarts (its log); then run the collection again."
                )
            time.sleep(min(1.0, settings.REGISTRY_GC_REPLICA_POLL_SECONDS / 2))

    def restore(self) -> None:
        """Read-write again, then pushes granted again: whatever happened before (nothing to do
        for a window that failed before it refused anything, or whose row the repair ended: it
        granted pushes, and the replicas are told read-write since)."""
        if not self.opened or self.taken:
            return
        try:
            self.step(CollectionState.RESTORING, "replicas going read-write", 0, None)
            refuse_pushes(self.backend.pk, settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS + 5)
            try:
                self.switch(ReplicaMode.READ_WRITE)
            except WindowFailed as exc:  # pushes reach the replicas that did switch back
                logger.warning("registry.gc.restore_incomplete", extra={"error": str(exc)})
        except WindowTaken:
            self.taken = True
            raise
        finally:
            if not self.taken:
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
        try:
            self.step(state, error or "done", 1, 1, finished=True)
        except WindowTaken:
            self.taken = True
            logger.warning("registry.gc.taken", extra={"collection": str(self.collection.pk)})
            return
        collection_observe(self.collection, self.window_seconds)

    def step(
        self, state: str, message: str, done: int, total: int | None, *, finished: bool = False
    ) -> None:
        """Save the state (and, once ``finished``, the end and its audit row) with progress.
        A save that fails (other than ``WindowTaken``) leaves the state as it was, in memory as
        in the row: the next writes, the restore and the end still go by it."""
        collection = self.collection
        expected, before = collection.state, (collection.state_changed_at, collection.finished_at)
        now = timezone.now()
        with self.lock:
            collection.state, collection.state_changed_at = state, now
            collection.progress = {"message": message, "done": done, "total": total}
            try:
                with transaction.atomic():
                    if finished:
                        collection.finished_at = now
                    self.write(expected)
                    if finished:
                        collection_audit_end(collection)
            except WindowTaken:
                raise
            except BaseException:
                collection.state = expected
                collection.state_changed_at, collection.finished_at = before
                raise
        self.saved_at = time.monotonic()
        if self.on_progress is not None:
            self.on_progress(self.collection)

    def write(self, expected: str, *fields: str) -> None:
        """Save ``fields`` (default: every one) and the heartbeat, only if the row is still in
        ``expected``: ``WindowTaken`` otherwise. While pushes are refused, keep the refusal
        ahead (``REFUSAL_MARGIN_SECONDS``)."""
        if self.ended.is_set():
            raise WindowTaken(str(self.collection.pk))
        now = timezone.now()
        self.collection.heartbeat_at = now
        names = fields or tuple(
            field.attname
            for field in GarbageCollection._meta.concrete_fields
            if not field.primary_key
            and field.attname not in ("created_at", "backend_id", "heartbeat_at")
        )
        values = {name: getattr(self.collection, name) for name in names}
        if "delete_untagged_reason" in values:  # long repository names: cut, not a failed save
            values["delete_untagged_reason"] = values["delete_untagged_reason"][:REASON_MAX_LENGTH]
        written = GarbageCollection.objects.filter(pk=self.collection.pk, state=expected).update(
            **values, heartbeat_at=now
        )
        if not written:
            raise WindowTaken(str(self.collection.pk))
        self.refusal_keep(self.collection.state)

    def refusal_keep(self, state: str) -> None:
        """While pushes are refused (``REFUSING_STATES``), keep the refusal ahead."""
        if self.opened and state in REFUSING_STATES:
            floor = 2 * settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS + REFUSAL_MARGIN_SECONDS
            refusal_extend(self.backend.pk, floor)

    def progress(self, message: str, done: int, total: int | None, *, quiet: bool = False) -> None:
        """Save the progress of the current state (``quiet``: at most every
        ``PROGRESS_SAVE_SECONDS``, for steps that report often), and the heartbeat at least
        every ``HEARTBEAT_SECONDS``."""
        shown = {"message": message, "done": done, "total": total}
        changed = shown != self.collection.progress
        since = time.monotonic() - self.saved_at
        if since < HEARTBEAT_SECONDS and (not changed or (quiet and since < PROGRESS_SAVE_SECONDS)):
            self.collection.progress = shown
            return
        self.collection.progress = shown
        self.write(self.collection.state, "progress")
        self.saved_at = time.monotonic()
        if changed and self.on_progress is not None:
            self.on_progress(self.collection)

    def sleep(self, seconds: float, message: str) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.progress(message, int(seconds - left), int(seconds))
            time.sleep(min(1.0, left))


#: While the window is in these, pushes are refused, the refusal kept ahead by each heartbeat
#: (restoring too: a rolling switch back may outlast the refusal restore() sets).
REFUSING_STATES = (
    CollectionState.DRAINING,
    CollectionState.READ_ONLY,
    CollectionState.COLLECTING,
    CollectionState.RESTORING,
)
#: ``GarbageCollection.delete_untagged_reason``'s length: a longer reason is cut, not refused.
REASON_MAX_LENGTH = int(
    getattr(GarbageCollection._meta.get_field("delete_untagged_reason"), "max_length", 512)
)
