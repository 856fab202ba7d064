"""The reconciler's repairs, each safe on its own (rows are locked and leased): enqueueing the
registries that are due, publishing a ready registry's URL again, retrying a registry that
failed because its backend did not answer, and purging expired job credentials. The pass
(``registries.reconciler``) decides which rows to repair and keeps one failing repair from
stopping the rest."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from clusters.interface import AgentEnvironmentVariable, agent_environment_set
from registries import conditions
from registries.conditions import SyncedCondition
from registries.locks import registries_due_lock, registry_lock_with_cluster
from registries.models import (
    REGISTRY_URL_VARIABLE,
    JobCredential,
    Registry,
    RegistryBackend,
    State,
)
from registries.services import attempt_lease, reconcile_interval, registry_retry
from registries.services.lifecycle import ENVIRONMENT_SOURCE, enqueue, transition

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")

#: How long an expired job credential's row is kept (long enough to see it in the console after
#: its job, and for a late pre-exit to revoke it again: 204) before a pass deletes it.
JOB_CREDENTIAL_RETENTION = timedelta(days=1)


def registries_claim_due(*, now: datetime | None = None) -> list[Registry]:
    """Enqueue an attempt for every registry that is due (``selectors.registries_due``), each
    leased for ``attempt_lease()`` so that the next pass does not enqueue it again while the
    attempt waits or runs. Returns them.

    A ``provisioning`` registry whose lease expired goes back to ``pending``: its attempt died.
    ``Synced`` says why each was enqueued again, except a final sweep that is simply due.
    """
    now = now or timezone.now()
    with transaction.atomic():
        due = registries_due_lock(
            now=now, interval=reconcile_interval(), limit=settings.REGISTRY_RECONCILE_BATCH
        )
        for registry in due:
            lease = now + attempt_lease()
            work = "deprovisioning" if registry.deprovision_requested_at else "provisioning"
            died = registry.attempt_deadline
            synced = conditions.condition_get(registry, conditions.SYNCED)
            if died is not None:
                message = (
                    f"Attempt {registry.attempts} did not finish by {died:%H:%M:%S} UTC (a worker "
                    f"died or lost its database); {work} again."
                )
            elif registry.state == State.DEPROVISIONING and (
                synced and synced["status"] == conditions.TRUE
            ):
                message = ""  # a swept registry's final sweep is due: nothing went wrong
            else:
                message = (
                    f"No worker took it up since {registry.state_changed_at:%H:%M:%S} UTC (a lost "
                    f"message); {work} enqueued again."
                )
            stalled = SyncedCondition.false(conditions.STALLED, message, at=now)
            if registry.state == State.PROVISIONING:
                transition(
                    registry,
                    State.PENDING,
                    synced=stalled if message else None,
                    message=message,
                    next_attempt_at=lease,
                )
            else:
                if message:
                    stalled.set_on(registry)
                registry.next_attempt_at, registry.attempt_deadline = lease, None
                registry.save(update_fields=["next_attempt_at", "attempt_deadline", "conditions"])
            enqueue(registry)
    for registry in due:
        logger.warning(
            "registry.redriven", extra={"registry_id": str(registry.pk), "state": registry.state}
        )
    return due


def registry_republish(*, registry: Registry) -> str | None:
    """Publish a ready registry's URL to its cluster's jobs again if they do not receive it (the
    variable is missing or holds another value). Returns what was repaired, or None."""
    with transaction.atomic():
        locked = registry_lock_with_cluster(registry)
        if locked is None or locked.state != State.READY or locked.cluster is None:
            return None
        current = (
            AgentEnvironmentVariable.objects.filter(
                cluster=locked.cluster, name=REGISTRY_URL_VARIABLE
            )
            .values_list("value", flat=True)
            .first()
        )
        if current == locked.url:
            return None
        what = "missing" if current is None else f"stale ({current!r})"
        try:
            with transaction.atomic():
                agent_environment_set(
                    cluster=locked.cluster,
                    name=REGISTRY_URL_VARIABLE,
                    value=locked.url,
                    source=ENVIRONMENT_SOURCE,
                )
        except ValidationError as exc:
            repaired = None
            problem = (
                f"{REGISTRY_URL_VARIABLE} is {what} and cannot be published: {exc.messages[0]}"
            )
            SyncedCondition.false(conditions.RECONCILE_ERROR, problem).set_on(locked)
            # Jobs do not receive the URL: the registry is of no use to them.
            conditions.condition_set(
                locked, conditions.READY, conditions.FALSE, conditions.NOT_PUBLISHED, problem
            )
        else:
            repaired = f"re-published {REGISTRY_URL_VARIABLE}: it was {what}"
            SyncedCondition.true(f"{repaired[0].upper()}{repaired[1:]}.").set_on(locked)
            ready = conditions.condition_get(locked, conditions.READY)
            if ready and ready["reason"] == conditions.NOT_PUBLISHED:
                conditions.ready_from_state(locked)
        locked.save(update_fields=["conditions"])
    logger.warning(
        "registry.republished" if repaired else "registry.republish_failed",
        extra={"registry_id": str(registry.pk), "was": what},
    )
    return repaired


def registry_retry_failed(*, registry: Registry) -> bool:
    """Retry a registry that failed because its backend did not answer, now that it answers
    again. Returns whether it was retried (not if it moved on since it was read)."""
    try:
        registry_retry(
            registry=registry,
            why="retried by the reconciler: the registry answers again",
            only_transient=True,
        )
    except ValidationError:
        return False  # moved on since it was read
    return True


def job_credentials_purge(*, now: datetime | None = None) -> int:
    """Delete the job credentials that expired more than ``JOB_CREDENTIAL_RETENTION`` ago
    (revoked or not: an expired credential never works again). Returns how many went. One
    statement: a job credential has no dependent rows."""
    now = now or timezone.now()
    expired = JobCredential.objects.filter(expires_at__lt=now - JOB_CREDENTIAL_RETENTION)
    deleted, _ = expired.delete()
    return deleted


def registry_rehost(*, registry: Registry, public_host: str) -> bool:
    """Give a ready registry the URL ``<public_host>/<namespace>`` (its backend's new public
    host) and publish it to its cluster's jobs, in one transaction (cluster, then registry
    locked). False if there was nothing to do (not ready any more, or already there)."""
    with transaction.atomic():
        locked = registry_lock_with_cluster(registry)
        if locked is None or locked.state != State.READY:
            return False
        url = f"{public_host}/{locked.namespace}"
        if locked.url == url:
            return False
        locked.url = url
        locked.save(update_fields=["url"])
        registry_republish(registry=locked)
    logger.info("registry.rehosted", extra={"registry_id": str(locked.pk), "url": url})
    return True


def rehost_settle() -> timedelta:
    """How long after a public host changes a registry may still be made ready on the old one:
    a worker's copy of the backends is up to ``REGISTRY_BACKENDS_CACHE_SECONDS`` old, and an
    attempt that began before the change commits within its lease. Until then the reconciler
    keeps looking for registries off the new host, however many it already moved."""
    return timedelta(seconds=settings.REGISTRY_BACKENDS_CACHE_SECONDS) + attempt_lease()


def backend_rehosted(*, backend_id: int, changed_at: datetime) -> None:
    """Every ready registry of the backend is on its public host, and ``rehost_settle`` has
    passed since it changed (the caller checks): clear ``hosts_changed_at``, unless it changed
    again since the pass read it."""
    RegistryBackend.objects.filter(pk=backend_id, hosts_changed_at=changed_at).update(
        hosts_changed_at=None
    )
