"""Provisioning: one attempt moves a ``pending`` registry to ``ready`` and publishes its URL."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from clusters.interface import Cluster, agent_environment_set
from controlplane import metrics
from registries.backends import Backend
from registries.conditions import SyncedCondition
from registries.drivers import CachedProvisioning, DriverError, get_driver
from registries.locks import registry_lock_with_cluster, registry_lock_with_its_cluster
from registries.models import REGISTRY_URL_VARIABLE, Registry, State
from registries.services.lifecycle import (
    ENVIRONMENT_SOURCE,
    RECORDED_ERRORS,
    AttemptResult,
    Transitions,
    attempt_failed,
    attempt_may_begin,
    left_as_is,
    still_ours,
)
from registries.services.placement import (
    NoBackendAvailable,
    placement_choose,
    registry_backend,
)

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")

#: The states an attempt starts from (``provisioning``: a worker died mid-attempt).
STARTS_FROM = (State.PENDING, State.PROVISIONING)


def registry_provision(*, registry_id: uuid.UUID | str) -> AttemptResult:
    """Run one provisioning attempt. Harmless to repeat: a ready registry is left as it is.

    ``pending`` (or ``provisioning``, when a worker died mid-attempt and the task came back)
    becomes ``provisioning``; the driver prepares the namespace; then the registry becomes
    ``ready`` and its URL is published to the cluster's agent environment, in one transaction.
    A transient failure goes back to ``pending`` and asks for a retry until
    ``REGISTRY_PROVISION_MAX_ATTEMPTS``; then, or on any other failure, ``failed``: an operator
    retries it (``registry_retry``) once the cause is fixed.

    The attempt starts by locking the registry's cluster and then the registry (the lock
    order), found by the registry's id with nothing read before. When the driver can then answer
    without calling the registry (it checked it moments ago), the whole attempt is that one
    transaction (``_provision_at_once``); otherwise it records the attempt's start
    (``_begin``), and the driver is called with no lock held and the outcome recorded in a
    second transaction.
    """
    outcome: Registry | AttemptResult | tuple[Registry, datetime] | None
    with transaction.atomic():
        registry, cluster = registry_lock_with_its_cluster(registry_id)
        if (
            registry is not None
            and cluster is not None
            and (found := _url_at_once(registry)) is not None
        ):
            outcome = _provision_at_once(registry, cluster, *found)
        else:
            outcome = _begin(registry)
    if outcome is None:  # the attempt at once failed, all rolled back: the two-step one records it
        return _provision_in_two_steps(registry_id)
    if isinstance(outcome, AttemptResult):
        return outcome
    if isinstance(outcome, Registry):  # made ready at once
        _started(outcome)
        _finished(outcome, outcome.url)
        return AttemptResult(state=State.READY, attempts=outcome.attempts)
    return _provision_outcome(*outcome)


def _url_at_once(registry: Registry) -> tuple[str, Backend | None] | None:
    """The registry's URL and backend (the one placement chooses, if it has none yet) if its
    driver gives the URL without calling the registry, else None."""
    try:
        backend = _placed(registry)
        driver = get_driver(registry.driver, backend)
    except DriverError:
        return None  # an unknown driver, no backend to place on: the two-step attempt records it
    if not isinstance(driver, CachedProvisioning):
        return None
    url = driver.provision_cached(namespace=registry.namespace)
    return None if url is None else (url, backend)


def _placed(registry: Registry) -> Backend | None:
    """The registry's backend, or the one placement chooses for it (not yet recorded: ``_start``
    records it). Raises ``NoBackendAvailable``."""
    if registry.backend_id is not None:
        return registry_backend(registry)
    return placement_choose(key=str(registry.cluster_id or registry.pk))


def _provision_at_once(
    registry: Registry, cluster: Cluster, url: str, backend: Backend | None
) -> Registry | AttemptResult | None:
    """The attempt in the caller's transaction, which locked the registry and its cluster, for
    a URL the driver gave without calling the registry: ``pending -> provisioning -> ready``
    with both events, and the URL published. Returns the registry made ready, what to return
    instead (``attempt_may_begin``), or None if it failed: the transaction is then rolled back
    (the attempt too), for the two-step attempt to record the failure."""
    try:
        begun = attempt_may_begin(registry, STARTS_FROM)
        if isinstance(begun, AttemptResult):
            return begun
        registry, _ = begun
        transitions = Transitions(registry)
        _start(registry, transitions, deadline=None, backend=backend)
        _ready(registry, transitions, url)
        transitions.save()
        _publish(cluster, url)
    except RECORDED_ERRORS:
        transaction.set_rollback(True)
        logger.info("registry.provision.at_once_failed", extra={"registry_id": str(registry.pk)})
        return None
    return registry


def _begin(registry: Registry | None) -> tuple[Registry, datetime] | AttemptResult:
    """The two-step attempt's start, in the caller's transaction, which locked ``registry``:
    recorded with its lease (the attempt's deadline), or what to return instead."""
    begun = attempt_may_begin(registry, STARTS_FROM)
    if isinstance(begun, AttemptResult):
        return begun
    registry, deadline = begun
    try:
        backend = _placed(registry)
    except DriverError:
        backend = None  # the attempt then fails with the reason, in _provision_outcome
    transitions = Transitions(registry)
    _start(registry, transitions, deadline, backend=backend)
    transitions.save()
    return begun


def _provision_in_two_steps(registry_id: uuid.UUID | str) -> AttemptResult:
    """The attempt again in two steps, after the one at once failed and was rolled back: its
    start recorded (the same locks), then ``_provision_outcome``, which records the failure."""
    with transaction.atomic():
        registry, _ = registry_lock_with_its_cluster(registry_id)
        begun = _begin(registry)
    if isinstance(begun, AttemptResult):
        return begun
    return _provision_outcome(*begun)


def _provision_outcome(registry: Registry, deadline: datetime) -> AttemptResult:
    """The two-step attempt, its start committed: the driver called with no lock held, then the
    outcome recorded if the attempt still holds the registry."""
    _started(registry)
    registry_id = registry.pk
    try:
        if registry.backend_id is None:  # no backend could take it when the attempt began
            placement_choose(key=str(registry.cluster_id or registry.pk))  # raises why
            raise NoBackendAvailable("A backend became available as the attempt began.")
        driver = get_driver(registry.driver, registry_backend(registry))
        url = driver.provision(namespace=registry.namespace)
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


def _start(
    registry: Registry,
    transitions: Transitions,
    deadline: datetime | None,
    *,
    backend: Backend | None = None,
) -> None:
    """``pending`` (or an interrupted ``provisioning``) -> ``provisioning``: one more attempt,
    holding the registry until ``deadline`` (none for an attempt made in one transaction), on
    ``backend`` (recorded if the registry had none: it keeps it from then on)."""
    resumed = registry.state == State.PROVISIONING
    placed: dict[str, Any] = {}
    if backend is not None and registry.backend_id is None:
        placed["backend_id"] = backend.id
    transitions.to(
        State.PROVISIONING,
        message="resumed after an interrupted attempt" if resumed else "",
        attempts=registry.attempts + 1,
        next_attempt_at=deadline or registry.next_attempt_at,
        attempt_deadline=deadline,
        **placed,
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
