"""Provisioning: one attempt moves a ``pending`` registry to ``ready`` and publishes its URL."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from clusters.interface import agent_environment_set
from controlplane import metrics
from registries.conditions import SyncedCondition
from registries.drivers import get_driver
from registries.locks import registry_lock_with_cluster
from registries.models import REGISTRY_URL_VARIABLE, State
from registries.services.lifecycle import (
    ENVIRONMENT_SOURCE,
    AttemptResult,
    attempt_failed,
    begin_attempt,
    left_as_is,
    still_ours,
    transition,
)

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")


def registry_provision(*, registry_id: uuid.UUID | str) -> AttemptResult:
    """Run one provisioning attempt. Harmless to repeat: a ready registry is left as it is.

    ``pending`` (or ``provisioning``, when a worker died mid-attempt and the task came back)
    becomes ``provisioning``; the driver prepares the namespace; then the registry becomes
    ``ready`` and its URL is published to the cluster's agent environment, in one transaction.
    A transient failure goes back to ``pending`` and asks for a retry until
    ``REGISTRY_PROVISION_MAX_ATTEMPTS``; then, or on any other failure, ``failed``: an operator
    retries it (``registry_retry``) once the cause is fixed.
    """
    with transaction.atomic():
        begun = begin_attempt(registry_id, (State.PENDING, State.PROVISIONING))
        if isinstance(begun, AttemptResult):
            return begun
        registry, deadline = begun
        resumed = registry.state == State.PROVISIONING
        transition(
            registry,
            State.PROVISIONING,
            message="resumed after an interrupted attempt" if resumed else "",
            attempts=registry.attempts + 1,
            next_attempt_at=deadline,
            attempt_deadline=deadline,
        )
    log_extra = {"registry_id": str(registry.pk), "attempt": registry.attempts}
    logger.info("registry.provision.started", extra=log_extra)
    metrics.ATTEMPTS.labels("provision").inc()

    try:
        url = get_driver(registry.driver).provision(namespace=registry.namespace)
        with transaction.atomic():
            locked = registry_lock_with_cluster(registry)
            # A provisioning registry has its cluster: deletion moves it to deprovisioning.
            cluster = locked.cluster if locked is not None else None
            if not still_ours(locked, State.PROVISIONING, deadline) or cluster is None:
                return left_as_is(locked)
            registry = locked
            transition(
                registry,
                State.READY,
                synced=SyncedCondition.true(
                    f"Provisioned; its URL is published as {REGISTRY_URL_VARIABLE}."
                ),
                url=url,
                last_error="",
                ready_at=timezone.now(),
            )
            agent_environment_set(
                cluster=cluster,
                name=REGISTRY_URL_VARIABLE,
                value=url,
                source=ENVIRONMENT_SOURCE,
            )
    except Exception as exc:
        return attempt_failed(
            registry_id, exc, working=State.PROVISIONING, deadline=deadline, log_extra=log_extra
        )
    logger.info("registry.provision.ready", extra={**log_extra, "url": url})
    if registry.ready_at is not None:
        # Created in the transaction of the cluster's first hosted queue.
        took = (registry.ready_at - registry.created_at).total_seconds()
        metrics.TIME_TO_READY.labels(registry.driver).observe(took)
    return AttemptResult(state=State.READY, attempts=registry.attempts)
