"""Celery tasks: thin, idempotent wrappers that take ids and call services.

Every task may run twice (delivery is at least once: see docs/reliability.md); each service it
calls locks its registry row and does nothing when the work is already done. The canary tasks
and the usage scans run on the canaries queue (``CELERY_TASK_ROUTES``), so provisioning never
waits behind them. The services enqueue ``registries.provision`` and ``registries.deprovision``
by name: this module imports them, so they do not import it (``RegistriesConfig.ready`` does, to
register the tasks).
"""

from __future__ import annotations

import dataclasses

from celery import Task, shared_task
from django.conf import settings

from registries.models import Registry
from registries.reconciler import registries_reconcile
from registries.retention import RETENTION_RUN_TASK
from registries.services import (
    COLLECTION_TASK,
    DEPROVISION_TASK,
    NOTIFICATIONS_TASK,
    PROVISION_TASK,
    AttemptResult,
    RegistryNotReady,
    RetentionRunning,
    backend_canary,
    canary_backends,
    collection_run,
    collections_repair,
    collections_schedule,
    notifications_apply_unless_busy,
    notifications_sweep,
    registries_canary_claim,
    registries_usage_scan_claim,
    registry_canary,
    registry_deprovision,
    registry_provision,
    registry_usage_scan,
    retention_apply,
    retention_sweep,
)


# Time limits: CELERY_TASK_SOFT_TIME_LIMIT and CELERY_TASK_TIME_LIMIT apply to every task but the
# usage scan (REGISTRY_USAGE_SCAN_TIME_LIMIT).
@shared_task(  # type: ignore[untyped-decorator]
    bind=True,
    name=PROVISION_TASK,
    acks_late=True,
    max_retries=None,  # the registry row counts attempts; see REGISTRY_PROVISION_MAX_ATTEMPTS
)
def provision_registry(self: Task, registry_id: str) -> str | None:
    return _retried(self, registry_provision(registry_id=registry_id))


@shared_task(  # type: ignore[untyped-decorator]
    bind=True, name=DEPROVISION_TASK, acks_late=True, max_retries=None
)
def deprovision_registry(self: Task, registry_id: str) -> str | None:
    return _retried(self, registry_deprovision(registry_id=registry_id))


def _retried(task: Task, result: AttemptResult) -> str | None:
    if result.retry:
        raise task.retry(countdown=result.retry_in)
    return result.state


@shared_task(name="registries.reconcile")  # type: ignore[untyped-decorator]
def reconcile_registries() -> dict[str, object]:
    """One reconcile pass (Celery beat, every REGISTRY_RECONCILE_INTERVAL_SECONDS)."""
    return dataclasses.asdict(registries_reconcile())


@shared_task(name="registries.canaries")  # type: ignore[untyped-decorator]
def run_canaries() -> list[str]:
    """One canary round (Celery beat, every REGISTRY_CANARY_INTERVAL_SECONDS, on the canaries
    queue): run each registry backend's canary, then enqueue the canaries of the namespaces
    that are due (at most REGISTRY_CANARY_SAMPLE; a failing one the backend's pass made due
    again among them). Returns the registries whose canary it enqueued."""
    for backend in canary_backends():
        backend_canary(backend=backend)
    ids = [str(pk) for pk in registries_canary_claim()]
    for registry_id in ids:
        # A canary still queued when the next round starts is stale: let it expire.
        canary_registry.apply_async(
            (registry_id,), expires=settings.REGISTRY_CANARY_INTERVAL_SECONDS
        )
    return ids


@shared_task(name="registries.canary", acks_late=True)  # type: ignore[untyped-decorator]
def canary_registry(registry_id: str) -> bool | None:
    result = registry_canary(registry_id=registry_id)
    return None if result is None else result.ok


@shared_task(name="registries.usage_scans")  # type: ignore[untyped-decorator]
def run_usage_scans() -> list[str]:
    """One usage scan round (Celery beat, every REGISTRY_USAGE_SCAN_ROUND_SECONDS): enqueue the
    scans of the registries that are due (at most REGISTRY_USAGE_SCAN_BATCH). Returns their ids."""
    ids = [str(pk) for pk in registries_usage_scan_claim()]
    for registry_id in ids:
        # A scan still queued when its registry is next due is stale: let it expire.
        usage_scan_registry.apply_async(
            (registry_id,), expires=settings.REGISTRY_USAGE_SCAN_SECONDS
        )
    return ids


@shared_task(  # type: ignore[untyped-decorator]
    name="registries.usage_scan",
    acks_late=True,
    soft_time_limit=settings.REGISTRY_USAGE_SCAN_TIME_LIMIT,
    time_limit=settings.REGISTRY_USAGE_SCAN_TIME_LIMIT + 30,
)
def usage_scan_registry(registry_id: str) -> bool | None:
    result = registry_usage_scan(registry_id=registry_id)
    return None if result is None else result.ok


@shared_task(name=NOTIFICATIONS_TASK, acks_late=True)  # type: ignore[untyped-decorator]
def apply_notifications(registry_ids: list[str], again: bool = True) -> int:
    """Apply the registries' recorded notifications (enqueued by the endpoint on commit); the
    number applied. A repeated message finds them applied and does nothing. A registry another
    worker holds is left to it, and asked once more a second later, in case that worker read
    its last rows before these committed; the sweep covers the rest."""
    applied, busy = 0, []
    for registry_id in registry_ids:
        done = notifications_apply_unless_busy(registry_id=registry_id)
        if done is None:
            busy.append(registry_id)
        else:
            applied += done
    if busy and again:
        apply_notifications.apply_async((busy, False), countdown=1)
    return applied


@shared_task(name="registries.notifications-sweep")  # type: ignore[untyped-decorator]
def sweep_notifications() -> dict[str, int]:
    """Celery beat, every REGISTRY_NOTIFICATIONS_SWEEP_SECONDS: apply the notifications whose
    message was lost, and prune the applied ones older than REGISTRY_NOTIFICATIONS_KEEP_DAYS."""
    return notifications_sweep()


@shared_task(name="registries.retention_sweep")  # type: ignore[untyped-decorator]
def sweep_retention() -> int:
    """Celery beat, every REGISTRY_RETENTION_INTERVAL_SECONDS: enqueue a run for each ready
    registry whose retention policy is enabled; how many."""
    return retention_sweep()


@shared_task(  # type: ignore[untyped-decorator]
    name=RETENTION_RUN_TASK,
    acks_late=True,
    soft_time_limit=settings.REGISTRY_RETENTION_TIME_LIMIT_SECONDS,
    time_limit=settings.REGISTRY_RETENTION_TIME_LIMIT_SECONDS + 30,
)
def run_retention(registry_id: str, trigger: str) -> str | None:
    """Apply the registry's retention policy (the schedule, a quota limit); its run's id. None
    when there is nothing to do: the registry is gone or not ready, or a run is under way (a
    repeated message finds it, or finds its outcome and runs again: a run deletes only what the
    policy selects at the time)."""
    registry = Registry.objects.filter(pk=registry_id).first()
    if registry is None:
        return None
    try:
        return str(retention_apply(registry, trigger=trigger).pk)
    except (RegistryNotReady, RetentionRunning):
        return None


@shared_task(  # type: ignore[untyped-decorator]
    name=COLLECTION_TASK,
    acks_late=True,
    # The soft limit raises inside the window, which then restores the replicas (up to a switch
    # timeout) and finishes the collection: the hard limit leaves it that long. Past the hard
    # one, ``collections_end_stale`` does, once the heartbeat stopped. The collector itself is
    # stopped earlier (``collector_timeout``).
    soft_time_limit=settings.REGISTRY_GC_TIME_LIMIT_SECONDS,
    time_limit=settings.REGISTRY_GC_TIME_LIMIT_SECONDS
    + settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS
    + 60,
)
def garbage_collection(collection_id: str) -> str | None:
    """Run a requested garbage collection (on the maintenance queue: ``CLEANUP_TASK_ROUTES``); a
    message delivered again finds it no longer queued and does nothing."""
    collection = collection_run(collection_id)
    return None if collection is None else collection.state


@shared_task(name="registries.garbage_collection_schedule")  # type: ignore[untyped-decorator]
def garbage_collection_schedule() -> list[str]:
    """Celery beat: ask for the collections that are due (their ids)."""
    return [str(collection.pk) for collection in collections_schedule()]


@shared_task(name="registries.garbage_collection_repair")  # type: ignore[untyped-decorator]
def garbage_collection_repair() -> int:
    """Celery beat, every minute: end the windows whose worker stopped, send lost messages
    again (how many windows were ended)."""
    return collections_repair()
