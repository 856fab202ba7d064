"""Deprovisioning: a registry whose cluster is deleted (or that an operator deprovisions) grants
nothing from then on; sweeps delete its images and unpublish its URL, then it is ``deleted``."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clusters.interface import agent_environment_unset
from controlplane import metrics
from registries import conditions
from registries.conditions import SyncedCondition
from registries.locks import registry_lock
from registries.models import REGISTRY_URL_VARIABLE, Registry, State
from registries.services.audit import registry_audit
from registries.services.lifecycle import (
    ENVIRONMENT_SOURCE,
    AttemptResult,
    attempt_failed,
    begin_attempt,
    enqueue,
    left_as_is,
    reconcile_interval,
    still_ours,
    transition,
)
from registries.services.placement import registry_driver

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")

#: Distribution accepts a token up to this long after its ``exp`` (and before its ``nbf``).
DISTRIBUTION_LEEWAY_SECONDS = 60


def registry_deprovision_start(*, registry: Registry, reason: str, detach: bool = False) -> None:
    """Start deprovisioning ``registry``: from now on it grants nothing, and a worker deletes its
    images, unpublishes its URL and marks it ``deleted``. Harmless to repeat.

    ``detach`` releases the cluster (which is being deleted); the registry row stays as the
    record that its namespace was used, so the namespace is never given out again.
    """
    with transaction.atomic():
        locked = registry_lock(registry.pk)
        if locked is None:
            return
        changes: dict[str, object] = {"cluster": None} if detach else {}
        if locked.deprovision_requested_at is not None:  # already on its way: only let go
            if detach:
                locked.cluster = None
                locked.save(update_fields=["cluster"])
            return
        now, state_before = timezone.now(), locked.state
        transition(
            locked,
            State.DEPROVISIONING,
            synced=SyncedCondition.unknown(conditions.DEPROVISION_REQUESTED, reason, at=now),
            message=reason,
            deprovision_requested_at=now,
            attempts=0,
            next_attempt_at=now + reconcile_interval(),
            **changes,
        )
        enqueue(locked)
        if not detach:  # a cluster's deletion records its own row (CLUSTER_DELETED)
            registry_audit(
                locked,
                "REGISTRY_DEPROVISIONED",
                {"state": [state_before, State.DEPROVISIONING], "reason": reason},
            )
    logger.info(
        "registry.deprovision.requested", extra={"registry_id": str(locked.pk), "reason": reason}
    )


def access_token_window() -> timedelta:
    """How long a registry token issued now can still be used: its lifetime, plus the 60
    seconds Distribution allows past ``exp``."""
    longest = max(
        settings.REGISTRY_TOKEN_PULL_TTL_SECONDS, settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS
    )
    return timedelta(seconds=longest + DISTRIBUTION_LEEWAY_SECONDS)


def registry_deprovision(*, registry_id: uuid.UUID | str) -> AttemptResult:
    """Run one deprovisioning sweep: delete every tagged image in the namespace and remove the
    URL from the cluster's agent environment (if the cluster is still there).

    Distribution cannot revoke a token, so a token issued before deprovisioning was requested
    can still push until it expires. The first sweep therefore leaves the registry
    ``deprovisioning``, due for one more sweep (``next_attempt_at``) once every such token has
    expired (``access_token_window``); Celery beat enqueues it then, and it marks the registry
    ``deleted``. Harmless to repeat; transient failures are retried as in provisioning."""
    with transaction.atomic():
        begun = begin_attempt(registry_id, (State.DEPROVISIONING,))
        if isinstance(begun, AttemptResult):
            return begun
        registry, deadline = begun
        registry.attempts += 1
        registry.next_attempt_at = registry.attempt_deadline = deadline
        registry.save(update_fields=["attempts", "next_attempt_at", "attempt_deadline"])
    log_extra = {"registry_id": str(registry.pk), "attempt": registry.attempts}
    logger.info("registry.deprovision.started", extra=log_extra)
    metrics.ATTEMPTS.labels("deprovision").inc()
    try:
        deleted = registry_driver(registry).deprovision(namespace=registry.namespace)
        with transaction.atomic():
            locked = registry_lock(registry_id)
            if not still_ours(locked, State.DEPROVISIONING, deadline):
                return left_as_is(locked)
            registry = locked
            if registry.cluster is not None:
                agent_environment_unset(
                    cluster=registry.cluster, name=REGISTRY_URL_VARIABLE, source=ENVIRONMENT_SOURCE
                )
            requested = registry.deprovision_requested_at or registry.state_changed_at
            last_token_expiry = requested + access_token_window()
            swept = f"deleted {deleted} manifest(s) from {registry.namespace}"
            final = timezone.now() >= last_token_expiry
            if final:
                transition(
                    registry,
                    State.DELETED,
                    synced=SyncedCondition.true(f"{swept}; the registry is deleted."),
                    message=swept,
                    last_error="",
                )
            else:
                # Not a failure: the attempt budget starts again for the final sweep.
                message = (
                    f"{swept}; sweeping again after {last_token_expiry:%Y-%m-%d %H:%M:%S} UTC, "
                    "when every registry token issued before has expired"
                )
                transition(
                    registry,
                    State.DEPROVISIONING,
                    synced=SyncedCondition.true(message),
                    message=message,
                    attempts=0,
                    last_error="",
                    next_attempt_at=last_token_expiry,
                )
    except Exception as exc:
        return attempt_failed(
            registry_id, exc, working=State.DEPROVISIONING, deadline=deadline, log_extra=log_extra
        )
    log_extra["manifests"] = deleted
    logger.info(
        "registry.deprovision.deleted" if final else "registry.deprovision.swept", extra=log_extra
    )
    return AttemptResult(state=registry.state, attempts=registry.attempts)
