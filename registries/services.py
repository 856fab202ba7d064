"""Registry lifecycle: creation, provisioning, retry.

Every state change goes through ``_transition`` with the registry row locked, which writes the
``RegistryEvent`` in the same transaction. Network calls to the registry happen outside any
transaction, so a slow registry never holds a database lock.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from clusters.models import Cluster
from clusters.services import agent_environment_set
from registries.drivers import DriverError, RegistryUnavailable, get_driver
from registries.models import Registry, RegistryEvent, State

logger = logging.getLogger(__name__)

REGISTRY_URL_VARIABLE = "BUILDKITE_HOSTED_REGISTRY_URL"
ENVIRONMENT_SOURCE = "registry"


@dataclass(frozen=True)
class ProvisionResult:
    """What one provisioning attempt left behind. ``retry`` asks the caller to try again."""

    state: str | None
    attempts: int = 0
    retry: bool = False


def registry_namespace(cluster: Cluster) -> str:
    """``<org-slug>/<first 12 hex digits of the cluster id>``: valid as an OCI repository path,
    stable, and readable in registry logs."""
    return f"{cluster.organization.slug}/{cluster.pk.hex[:12]}"


def _transition(registry: Registry, to_state: str, *, message: str = "", **changes: object) -> None:
    """Move a locked ``registry`` to ``to_state`` and record the event, in one transaction."""
    if not registry.can_become(to_state):
        raise ValidationError(f"A {registry.state} registry cannot become {to_state}.")
    now = timezone.now()
    from_state, duration = registry.state, now - registry.state_changed_at
    registry.state = to_state
    registry.state_changed_at = now
    for field, value in changes.items():
        setattr(registry, field, value)
    RegistryEvent.objects.create(
        registry=registry,
        from_state=from_state,
        to_state=to_state,
        attempt=registry.attempts,
        duration=duration,
        message=message,
        created_at=now,
    )
    registry.save(update_fields=["state", "state_changed_at", *changes])


def _left_as_is(registry: Registry | None) -> ProvisionResult:
    """The result of an attempt that found nothing for it to do (gone, or moved on)."""
    return ProvisionResult(state=registry.state if registry else None)


def _lock(registry_id: uuid.UUID | str) -> Registry | None:
    return Registry.objects.select_for_update().filter(pk=registry_id).first()


def _enqueue_provision(registry: Registry) -> None:
    """Ask a worker to provision ``registry`` once the current transaction commits.

    If the broker cannot take the message, the registry stays ``pending``: that row, not the
    message, is the record of the work owed, and ``registries.redrive_stalled`` (Celery beat)
    enqueues it again later.
    """
    from registries.tasks import provision_registry  # tasks import this module

    registry_id = str(registry.pk)

    def send() -> None:
        try:
            provision_registry.delay(registry_id)
        except Exception:
            logger.exception(
                "registry.provision.enqueue_failed", extra={"registry_id": registry_id}
            )

    transaction.on_commit(send)


def registry_create_for_cluster(*, cluster: Cluster) -> Registry:
    """Create the cluster's registry in ``pending`` and enqueue its provisioning after commit.

    A cluster has one registry, ever: if it already has one, that one is returned and nothing is
    enqueued. The one-to-one constraint is the last guard against a concurrent creation.
    """
    existing = Registry.objects.filter(cluster=cluster).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            registry = Registry.objects.create(
                cluster=cluster,
                namespace=registry_namespace(cluster),
                driver=settings.REGISTRY_DRIVER,
                state=State.PENDING,
            )
            RegistryEvent.objects.create(
                registry=registry, from_state="", to_state=State.PENDING, message="created"
            )
    except IntegrityError:
        return Registry.objects.get(cluster=cluster)
    logger.info(
        "registry.created",
        extra={"registry_id": str(registry.pk), "cluster_id": str(cluster.pk)},
    )
    _enqueue_provision(registry)
    return registry


def registry_provision(*, registry_id: uuid.UUID | str) -> ProvisionResult:
    """Run one provisioning attempt. Harmless to repeat: a ready registry is left as it is.

    ``pending`` (or ``provisioning``, when a worker died mid-attempt and the task came back)
    becomes ``provisioning``; the driver prepares the namespace; then the registry becomes
    ``ready`` and its URL is published to the cluster's agent environment, in one transaction.
    A transient failure goes back to ``pending`` and asks for a retry until
    ``REGISTRY_PROVISION_MAX_ATTEMPTS``; then, or on any other failure, ``failed``: an operator
    retries it (``registry_retry``) once the cause is fixed.
    """
    with transaction.atomic():
        registry = _lock(registry_id)
        if registry is None or registry.state not in (State.PENDING, State.PROVISIONING):
            return _left_as_is(registry)
        resumed = registry.state == State.PROVISIONING
        if registry.attempts >= settings.REGISTRY_PROVISION_MAX_ATTEMPTS:
            # Attempts that never finished (a worker killed each time) count against the budget
            # too, so a task that always dies cannot be redelivered forever.
            error = f"no attempt finished after {registry.attempts} attempts"
            _transition(registry, State.FAILED, message=error, last_error=error)
            logger.warning("registry.provision.failed", extra={"registry_id": str(registry.pk)})
            return ProvisionResult(state=State.FAILED, attempts=registry.attempts)
        _transition(
            registry,
            State.PROVISIONING,
            message="resumed after an interrupted attempt" if resumed else "",
            attempts=registry.attempts + 1,
        )
    log_extra = {"registry_id": str(registry.pk), "attempt": registry.attempts}
    logger.info("registry.provision.started", extra=log_extra)

    try:
        url = get_driver(registry.driver).provision(namespace=registry.namespace)
        with transaction.atomic():
            registry = _lock(registry_id)
            if registry is None or registry.state != State.PROVISIONING:
                return _left_as_is(registry)
            _transition(registry, State.READY, url=url, last_error="", ready_at=timezone.now())
            agent_environment_set(
                cluster=registry.cluster,
                name=REGISTRY_URL_VARIABLE,
                value=url,
                source=ENVIRONMENT_SOURCE,
            )
    except DriverError as exc:
        return _provision_failed(registry_id, exc)
    except (ValidationError, ValueError, TypeError, LookupError) as exc:
        # A bug or bad data, not the registry: retrying the same code would fail the same way.
        logger.exception("registry.provision.error", extra=log_extra)
        return _provision_failed(registry_id, DriverError(f"{type(exc).__name__}: {exc}"))
    logger.info("registry.provision.ready", extra={**log_extra, "url": url})
    return ProvisionResult(state=State.READY, attempts=registry.attempts)


def _provision_failed(registry_id: uuid.UUID | str, exc: DriverError) -> ProvisionResult:
    """Record a failed attempt: back to ``pending`` to retry a transient failure with attempts
    left, otherwise ``failed``."""
    transient = isinstance(exc, RegistryUnavailable)
    with transaction.atomic():
        registry = _lock(registry_id)
        if registry is None or registry.state != State.PROVISIONING:
            return _left_as_is(registry)
        retry = transient and registry.attempts < settings.REGISTRY_PROVISION_MAX_ATTEMPTS
        error = str(exc)
        if retry:
            _transition(registry, State.PENDING, message=f"will retry: {error}", last_error=error)
        else:
            reason = f"gave up after {registry.attempts} attempts" if transient else "not retryable"
            _transition(registry, State.FAILED, message=f"{reason}: {error}", last_error=error)
    logger.warning(
        "registry.provision.retrying" if retry else "registry.provision.failed",
        extra={"registry_id": str(registry.pk), "attempt": registry.attempts, "error": error},
    )
    return ProvisionResult(state=registry.state, attempts=registry.attempts, retry=retry)


def registry_retry(*, registry: Registry) -> Registry:
    """Start provisioning a ``failed`` registry again, with a fresh attempt budget."""
    with transaction.atomic():
        locked = _lock(registry.pk)
        if locked is None or locked.state != State.FAILED:
            state = locked.state if locked else "deleted"
            raise ValidationError(f"Only a failed registry can be retried; this one is {state}.")
        _transition(locked, State.PENDING, message="retry requested", attempts=0)
        _enqueue_provision(locked)
    logger.info("registry.provision.retry_requested", extra={"registry_id": str(locked.pk)})
    return locked
