"""Registry lifecycle: creation, provisioning, retry, deprovisioning.

Every state change goes through ``_transition`` with the registry row locked, which writes the
``RegistryEvent`` in the same transaction. Network calls to the registry happen outside any
transaction, so a slow registry never holds a database lock.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from clusters.models import Cluster
from clusters.services import agent_environment_set, agent_environment_unset
from registries.drivers import DriverError, RegistryUnavailable, get_driver
from registries.models import Registry, RegistryEvent, State
from registries.selectors import registries_due

logger = logging.getLogger(__name__)

REGISTRY_URL_VARIABLE = "BUILDKITE_HOSTED_REGISTRY_URL"
NAMESPACE_ATTEMPTS = 3
#: Distribution accepts a token up to this long after its ``exp`` (and before its ``nbf``).
DISTRIBUTION_LEEWAY_SECONDS = 60
ENVIRONMENT_SOURCE = "registry"


@dataclass(frozen=True)
class AttemptResult:
    """What one provisioning or deprovisioning attempt left behind. ``retry`` asks the caller to
    try again."""

    state: str | None
    attempts: int = 0
    retry: bool = False


def registry_namespace(cluster: Cluster) -> str:
    """``<org-slug>/<12 random hex digits>``: valid as an OCI repository path, readable in
    registry logs, and new for every registry. Not derived from the cluster id: ids can come
    from the platform (time-ordered UUIDs share their leading digits), and a cluster deleted and
    created again with the same id must not get its old, never-reused namespace back."""
    return f"{cluster.organization.slug}/{secrets.token_hex(6)}"


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


def _left_as_is(registry: Registry | None) -> AttemptResult:
    """The result of an attempt that found nothing for it to do (gone, or moved on)."""
    return AttemptResult(state=registry.state if registry else None)


def _lock(registry_id: uuid.UUID | str) -> Registry | None:
    return Registry.objects.select_for_update().filter(pk=registry_id).first()


def _lock_with_cluster(registry: Registry) -> Registry | None:
    """Lock the registry's cluster row, then the registry row: the order ``cluster_delete``
    takes them in. Writing the cluster's agent environment needs the cluster row too (the
    foreign key check), so taking the registry first could deadlock with a deletion."""
    if registry.cluster_id is not None:
        Cluster.objects.select_for_update().filter(pk=registry.cluster_id).first()
    return _lock(registry.pk)


def _give_up_if_exhausted(registry: Registry) -> AttemptResult | None:
    """Fail a locked registry that has used its attempt budget. Attempts that never finished (a
    worker killed each time) count too, so a task that always dies is not redelivered forever."""
    if registry.attempts < settings.REGISTRY_PROVISION_MAX_ATTEMPTS:
        return None
    error = f"no attempt finished after {registry.attempts} attempts"
    _transition(registry, State.FAILED, message=error, last_error=error)
    logger.warning("registry.attempt.failed", extra={"registry_id": str(registry.pk)})
    return AttemptResult(state=State.FAILED, attempts=registry.attempts)


def _enqueue(registry: Registry) -> None:
    """Ask a worker to move ``registry`` on once the current transaction commits: provision it,
    or deprovision it once that was asked for.

    If the broker cannot take the message, the registry stays where it is: that row, not the
    message, is the record of the work owed, and ``registries.redrive_stalled`` (Celery beat)
    enqueues it again later.
    """
    from registries.tasks import deprovision_registry, provision_registry  # they import us

    task = deprovision_registry if registry.deprovision_requested_at else provision_registry
    registry_id = str(registry.pk)

    def send() -> None:
        try:
            task.delay(registry_id)
        except Exception:
            logger.exception(
                "registry.enqueue_failed", extra={"registry_id": registry_id, "task": task.name}
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
    for attempt in range(NAMESPACE_ATTEMPTS):
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
            break
        except IntegrityError:
            raced = Registry.objects.filter(cluster=cluster).first()
            if raced is not None:
                return raced  # another transaction created it
            if attempt == NAMESPACE_ATTEMPTS - 1:  # 48 random bits taken, three times
                raise
    logger.info(
        "registry.created",
        extra={"registry_id": str(registry.pk), "cluster_id": str(cluster.pk)},
    )
    _enqueue(registry)
    return registry


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
        registry = _lock(registry_id)
        if registry is None or registry.state not in (State.PENDING, State.PROVISIONING):
            return _left_as_is(registry)
        resumed = registry.state == State.PROVISIONING
        if exhausted := _give_up_if_exhausted(registry):
            return exhausted
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
            locked = _lock_with_cluster(registry)
            # A provisioning registry has its cluster: deletion moves it to deprovisioning.
            cluster = locked.cluster if locked is not None else None
            if locked is None or locked.state != State.PROVISIONING or cluster is None:
                return _left_as_is(locked)
            registry = locked
            _transition(registry, State.READY, url=url, last_error="", ready_at=timezone.now())
            agent_environment_set(
                cluster=cluster,
                name=REGISTRY_URL_VARIABLE,
                value=url,
                source=ENVIRONMENT_SOURCE,
            )
    except Exception as exc:
        return _attempt_failed(registry_id, exc, working=State.PROVISIONING, log_extra=log_extra)
    logger.info("registry.provision.ready", extra={**log_extra, "url": url})
    return AttemptResult(state=State.READY, attempts=registry.attempts)


#: Errors that end an attempt and are recorded on the registry. Anything else (a database
#: outage, say) propagates, and the row is found again by ``registries.redrive_stalled``.
_RECORDED_ERRORS = (DriverError, ValidationError, ValueError, TypeError, LookupError)


def _attempt_failed(
    registry_id: uuid.UUID | str,
    exc: Exception,
    *,
    working: str,
    log_extra: dict[str, object],
) -> AttemptResult:
    """Record a failed attempt of a registry in state ``working``.

    A transient failure with attempts left is retried: a provisioning registry goes back to
    ``pending``, a deprovisioning one stays ``deprovisioning``. Otherwise the registry is
    ``failed``, with the error, for an operator to retry once the cause is fixed.
    """
    if not isinstance(exc, _RECORDED_ERRORS):
        raise exc
    if not isinstance(exc, DriverError):
        # A bug or bad data, not the registry: retrying the same code would fail the same way.
        logger.exception("registry.attempt.error", extra=log_extra)
    transient = isinstance(exc, RegistryUnavailable)
    retry_state = State.PENDING if working == State.PROVISIONING else working
    with transaction.atomic():
        registry = _lock(registry_id)
        if registry is None or registry.state != working:
            return _left_as_is(registry)
        retry = transient and registry.attempts < settings.REGISTRY_PROVISION_MAX_ATTEMPTS
        error = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
        if retry:
            _transition(registry, retry_state, message=f"will retry: {error}", last_error=error)
        else:
            reason = f"gave up after {registry.attempts} attempts" if transient else "not retryable"
            _transition(registry, State.FAILED, message=f"{reason}: {error}", last_error=error)
    logger.warning(
        "registry.attempt.retrying" if retry else "registry.attempt.failed",
        extra={**log_extra, "state": working, "error": error},
    )
    return AttemptResult(state=registry.state, attempts=registry.attempts, retry=retry)


def registry_retry(*, registry: Registry) -> Registry:
    """Start a ``failed`` registry again, with a fresh attempt budget: provisioning, or
    deprovisioning if that is what failed."""
    with transaction.atomic():
        locked = _lock(registry.pk)
        if locked is None or locked.state != State.FAILED:
            state = locked.state if locked else "deleted"
            raise ValidationError(f"Only a failed registry can be retried; this one is {state}.")
        next_state = State.DEPROVISIONING if locked.deprovision_requested_at else State.PENDING
        _transition(
            locked,
            next_state,
            message=f"retry requested after: {locked.last_error}"
            if locked.last_error
            else ("retry requested"),
            attempts=0,
            next_attempt_at=None,
            last_error="",
        )
        _enqueue(locked)
    logger.info("registry.retry_requested", extra={"registry_id": str(locked.pk)})
    return locked


def registry_deprovision_start(*, registry: Registry, reason: str, detach: bool = False) -> None:
    """Start deprovisioning ``registry``: from now on it grants nothing, and a worker deletes its
    images, unpublishes its URL and marks it ``deleted``. Harmless to repeat.

    ``detach`` releases the cluster (which is being deleted); the registry row stays as the
    record that its namespace was used, so the namespace is never given out again.
    """
    with transaction.atomic():
        locked = _lock(registry.pk)
        if locked is None:
            return
        changes: dict[str, object] = {"cluster": None} if detach else {}
        if locked.deprovision_requested_at is not None:  # already on its way: only let go
            if detach:
                locked.cluster = None
                locked.save(update_fields=["cluster"])
            return
        _transition(
            locked,
            State.DEPROVISIONING,
            message=reason,
            deprovision_requested_at=timezone.now(),
            attempts=0,
            **changes,
        )
        _enqueue(locked)
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
        registry = _lock(registry_id)
        if registry is None or registry.state != State.DEPROVISIONING:
            return _left_as_is(registry)
        if exhausted := _give_up_if_exhausted(registry):
            return exhausted
        registry.attempts += 1
        registry.save(update_fields=["attempts"])
    log_extra = {"registry_id": str(registry.pk), "attempt": registry.attempts}
    logger.info("registry.deprovision.started", extra=log_extra)
    try:
        deleted = get_driver(registry.driver).deprovision(namespace=registry.namespace)
        with transaction.atomic():
            registry = _lock(registry_id)
            if registry is None or registry.state != State.DEPROVISIONING:
                return _left_as_is(registry)
            if registry.cluster is not None:
                agent_environment_unset(
                    cluster=registry.cluster, name=REGISTRY_URL_VARIABLE, source=ENVIRONMENT_SOURCE
                )
            requested = registry.deprovision_requested_at or registry.state_changed_at
            last_token_expiry = requested + access_token_window()
            swept = f"deleted {deleted} manifest(s) from {registry.namespace}"
            final = timezone.now() >= last_token_expiry
            if final:
                _transition(registry, State.DELETED, message=swept, last_error="")
            else:
                # Not a failure: the attempt budget starts again for the final sweep.
                message = (
                    f"{swept}; sweeping again after {last_token_expiry:%Y-%m-%d %H:%M:%S} UTC, "
                    "when every registry token issued before has expired"
                )
                _transition(
                    registry,
                    State.DEPROVISIONING,
                    message=message,
                    attempts=0,
                    last_error="",
                    next_attempt_at=last_token_expiry,
                )
    except Exception as exc:
        return _attempt_failed(registry_id, exc, working=State.DEPROVISIONING, log_extra=log_extra)
    log_extra["manifests"] = deleted
    logger.info(
        "registry.deprovision.deleted" if final else "registry.deprovision.swept", extra=log_extra
    )
    return AttemptResult(state=registry.state, attempts=registry.attempts)


def registries_claim_due(*, stalled_for: timedelta) -> list[Registry]:
    """Registries that a (de)provisioning attempt should move now, each leased for
    ``stalled_for`` so that the next call does not hand it out again while its attempt runs.

    Due: ``pending``/``provisioning`` rows unchanged for ``stalled_for`` (a lost message, a dead
    worker), ``deprovisioning`` rows never swept and unchanged as long, and ``deprovisioning``
    rows whose final sweep is due (``next_attempt_at``).
    """
    now = timezone.now()
    with transaction.atomic():
        due = list(registries_due(now=now, stalled_for=stalled_for).select_for_update())
        Registry.objects.filter(
            pk__in=[r.pk for r in due if r.state == State.DEPROVISIONING]
        ).update(next_attempt_at=now + stalled_for)
    return due


def registry_verify(*, registry: Registry) -> Registry:
    """Check now that the registry answers and still demands and accepts our tokens (the check
    provisioning makes), and record what was seen on the registry. Changes no state."""
    try:
        seen, ok = get_driver(registry.driver).check_api(), True
    except DriverError as exc:
        seen, ok = str(exc), False
    Registry.objects.filter(pk=registry.pk).update(
        verified_at=timezone.now(), verified_ok=ok, verification=seen
    )
    registry.refresh_from_db(fields=["verified_at", "verified_ok", "verification"])
    logger.info("registry.verified", extra={"registry_id": str(registry.pk), "ok": ok})
    return registry
