"""Provisioning: one attempt moves a ``pending`` registry to ``ready`` and publishes its URL."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from clusters.interface import Cluster, agent_environment_set
from controlplane import metrics
from controlplane.compiled import CompiledSelect
from registries.conditions import SyncedCondition
from registries.drivers import CachedProvisioning, DriverError, get_driver
from registries.locks import registry_lock_with_cluster
from registries.models import REGISTRY_URL_VARIABLE, Registry, State
from registries.services.lifecycle import (
    ENVIRONMENT_SOURCE,
    RECORDED_ERRORS,
    AttemptResult,
    Transitions,
    attempt_failed,
    attempt_may_begin,
    begin_attempt,
    left_as_is,
    still_ours,
)

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")

#: The states an attempt starts from (``provisioning``: a worker died mid-attempt).
STARTS_FROM = (State.PENDING, State.PROVISIONING)

#: What an attempt reads first, to choose between one transaction and two (compiled once).
_registry_read = CompiledSelect(
    Registry,
    lambda pk: Registry.objects.filter(pk=pk).only("cluster", "driver", "namespace").order_by()[:1],
    "id",
)


def registry_provision(*, registry_id: uuid.UUID | str) -> AttemptResult:
    """Run one provisioning attempt. Harmless to repeat: a ready registry is left as it is.

    ``pending`` (or ``provisioning``, when a worker died mid-attempt and the task came back)
    becomes ``provisioning``; the driver prepares the namespace; then the registry becomes
    ``ready`` and its URL is published to the cluster's agent environment, in one transaction.
    A transient failure goes back to ``pending`` and asks for a retry until
    ``REGISTRY_PROVISION_MAX_ATTEMPTS``; then, or on any other failure, ``failed``: an operator
    retries it (``registry_retry``) once the cause is fixed.

    When the driver can answer without calling the registry (it checked it moments ago), the
    whole attempt is one transaction (``_provision_at_once``); otherwise the attempt is recorded
    first, the driver called with no lock held, and the outcome recorded in a second transaction.
    """
    found = _registry_read(registry_id)
    registry = found[0] if found else None
    url = _url_at_once(registry) if registry is not None else None
    if registry is not None and url is not None:
        try:
            result = _provision_at_once(registry, url)
        except RECORDED_ERRORS:
            # All rolled back, the attempt too: the two-step attempt records the failure.
            logger.info(
                "registry.provision.at_once_failed", extra={"registry_id": str(registry_id)}
            )
        else:
            if result is not None:
                return result
    return _provision_in_two_steps(registry_id)


def _url_at_once(registry: Registry) -> str | None:
    """The registry's URL if its driver gives it without calling the registry, else None."""
    try:
        driver = get_driver(registry.driver)
    except DriverError:
        return None  # an unknown driver: the two-step attempt records it
    if registry.cluster_id is None or not isinstance(driver, CachedProvisioning):
        return None
    return driver.provision_cached(namespace=registry.namespace)


def _provision_at_once(registry: Registry, url: str) -> AttemptResult | None:
    """The attempt in one transaction, for a URL the driver gave without calling the registry:
    the registry's cluster and then its row locked (the lock order), ``pending -> provisioning
    -> ready`` with both events, and the URL published. None if the registry changed clusters
    since it was read (the two-step attempt handles it)."""
    with transaction.atomic():
        locked = registry_lock_with_cluster(registry)
        if locked is not None and locked.cluster_id != registry.cluster_id:
            return None
        cluster = locked.cluster if locked is not None else None
        begun = attempt_may_begin(locked, STARTS_FROM)
        if isinstance(begun, AttemptResult):
            return begun
        registry, _ = begun
        if cluster is None:
            return None
        transitions = Transitions(registry)
        _start(registry, transitions, deadline=None)
        _ready(registry, transitions, url)
        transitions.save()
        _publish(cluster, url)
    _started(registry)
    _finished(registry, url)
    return AttemptResult(state=State.READY, attempts=registry.attempts)


def _provision_in_two_steps(registry_id: uuid.UUID | str) -> AttemptResult:
    """The attempt recorded first (its lease), the driver called with no lock held, then the
    outcome recorded if the attempt still holds the registry."""
    with transaction.atomic():
        begun = begin_attempt(registry_id, STARTS_FROM)
        if isinstance(begun, AttemptResult):
            return begun
        registry, deadline = begun
        transitions = Transitions(registry)
        _start(registry, transitions, deadline)
        transitions.save()
    _started(registry)
    try:
        url = get_driver(registry.driver).provision(namespace=registry.namespace)
        with transaction.atomic():
            locked = registry_lock_with_cluster(registry)
            # A provisioning registry has its cluster: deletion moves it to deprovisioning.
            cluster = locked.cluster if locked is not None else None
            if not still_ours(locked, State.PROVISIONING, deadline) or cluster is None:
                return left_as_is(locked)
            registry = locked
            transitions = Transitions(registry)
            _ready(registry, transitions, url)
            transitions.save()
            _publish(cluster, url)
    except Exception as exc:
        return attempt_failed(
            registry_id,
            exc,
            working=State.PROVISIONING,
            deadline=deadline,
            log_extra=_log_extra(registry),
        )
    _finished(registry, url)
    return AttemptResult(state=State.READY, attempts=registry.attempts)


def _start(registry: Registry, transitions: Transitions, deadline: datetime | None) -> None:
    """``pending`` (or an interrupted ``provisioning``) -> ``provisioning``: one more attempt,
    holding the registry until ``deadline`` (none for an attempt made in one transaction)."""
    resumed = registry.state == State.PROVISIONING
    transitions.to(
        State.PROVISIONING,
        message="resumed after an interrupted attempt" if resumed else "",
        attempts=registry.attempts + 1,
        next_attempt_at=deadline or registry.next_attempt_at,
        attempt_deadline=deadline,
    )


def _started(registry: Registry) -> None:
    """Said once the attempt's start is committed (with its end, for one transaction)."""
    logger.info("registry.provision.started", extra=_log_extra(registry))
    metrics.ATTEMPTS.labels("provision").inc()


def _ready(registry: Registry, transitions: Transitions, url: str) -> None:
    transitions.to(
        State.READY,
        synced=SyncedCondition.true(
            f"Provisioned; its URL is published as {REGISTRY_URL_VARIABLE}."
        ),
        url=url,
        last_error="",
        ready_at=timezone.now(),
    )


def _publish(cluster: Cluster, url: str) -> None:
    """Publish the URL to the jobs of the cluster (locked, with its registry)."""
    agent_environment_set(
        cluster=cluster,
        name=REGISTRY_URL_VARIABLE,
        value=url,
        source=ENVIRONMENT_SOURCE,
    )


def _finished(registry: Registry, url: str) -> None:
    logger.info("registry.provision.ready", extra={**_log_extra(registry), "url": url})
    if registry.ready_at is not None:
        # Created in the transaction of the cluster's first hosted queue.
        took = (registry.ready_at - registry.created_at).total_seconds()
        metrics.TIME_TO_READY.labels(registry.driver).observe(took)


def _log_extra(registry: Registry) -> dict[str, object]:
    return {"registry_id": str(registry.pk), "attempt": registry.attempts}
