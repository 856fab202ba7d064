"""Celery tasks: thin, idempotent wrappers that take ids and call services."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings

from registries.models import State
from registries.services import (
    AttemptResult,
    registries_claim_due,
    registry_deprovision,
    registry_provision,
)

logger = logging.getLogger(__name__)


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with "equal jitter": half of the delay fixed, half random.

    Attempt 1 waits about ``REGISTRY_PROVISION_BACKOFF_SECONDS``, each later attempt about twice
    as long, capped at ``REGISTRY_PROVISION_BACKOFF_MAX_SECONDS``.
    """
    base: float = settings.REGISTRY_PROVISION_BACKOFF_SECONDS
    cap: float = settings.REGISTRY_PROVISION_BACKOFF_MAX_SECONDS
    delay = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not cryptography


# Time limits: CELERY_TASK_SOFT_TIME_LIMIT and CELERY_TASK_TIME_LIMIT apply to every task.
@shared_task(  # type: ignore[untyped-decorator]
    bind=True,
    name="registries.provision",
    acks_late=True,
    max_retries=None,  # the registry row counts attempts; see REGISTRY_PROVISION_MAX_ATTEMPTS
)
def provision_registry(self: Task, registry_id: str) -> str | None:
    return _retried(self, registry_provision(registry_id=registry_id))


@shared_task(  # type: ignore[untyped-decorator]
    bind=True, name="registries.deprovision", acks_late=True, max_retries=None
)
def deprovision_registry(self: Task, registry_id: str) -> str | None:
    return _retried(self, registry_deprovision(registry_id=registry_id))


def _retried(task: Task, result: AttemptResult) -> str | None:
    if result.retry:
        raise task.retry(countdown=backoff_seconds(result.attempts))
    return result.state


@shared_task(name="registries.redrive_stalled")  # type: ignore[untyped-decorator]
def redrive_stalled_registries() -> list[str]:
    """Enqueue (de)provisioning for registries that are due: stalled ones, and deprovisioning
    ones whose final sweep is due (Celery beat)."""
    stalled = registries_claim_due(
        stalled_for=timedelta(seconds=settings.REGISTRY_STALLED_AFTER_SECONDS)
    )
    for registry in stalled:
        logger.warning(
            "registry.redriven", extra={"registry_id": str(registry.pk), "state": registry.state}
        )
        task = (
            deprovision_registry if registry.state == State.DEPROVISIONING else provision_registry
        )
        task.delay(str(registry.pk))
    return [str(registry.pk) for registry in stalled]
