"""Registry lifecycle: creation, provisioning, retry, deprovisioning.

Every state change goes through ``_transition`` with the registry row locked, which writes the
``RegistryEvent`` in the same transaction. Network calls to the registry happen outside any
transaction, so a slow registry never holds a database lock.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from typing_extensions import TypeIs

from clusters.models import AgentEnvironmentVariable, Cluster
from clusters.services import agent_environment_set, agent_environment_unset
from registries import conditions
from registries.drivers import DriverError, RegistryUnavailable, get_driver
from registries.models import REGISTRY_URL_VARIABLE, Registry, RegistryEvent, State
from registries.selectors import registries_due

logger = logging.getLogger(__name__)

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
    #: Seconds to wait before the retry (the backoff), when ``retry``.
    retry_in: float = 0.0


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with "equal jitter": half of the delay fixed, half random.

    Attempt 1 waits about ``REGISTRY_PROVISION_BACKOFF_SECONDS``, each later attempt about twice
    as long, capped at ``REGISTRY_PROVISION_BACKOFF_MAX_SECONDS``.
    """
    base: float = settings.REGISTRY_PROVISION_BACKOFF_SECONDS
    cap: float = settings.REGISTRY_PROVISION_BACKOFF_MAX_SECONDS
    delay = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not cryptography


def reconcile_interval() -> timedelta:
    """How often the reconciler runs (``REGISTRY_RECONCILE_INTERVAL_SECONDS``)."""
    return timedelta(seconds=settings.REGISTRY_RECONCILE_INTERVAL_SECONDS)


def attempt_lease() -> timedelta:
    """How long a started attempt holds its registry: no attempt outlives the task's hard time
    limit, and the reconciler looks again within one interval after that."""
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT) + reconcile_interval()


def registry_namespace(cluster: Cluster) -> str:
    """``<org-slug>/<12 random hex digits>``: valid as an OCI repository path, readable in
    registry logs, and new for every registry. Not derived from the cluster id: ids can come
    from the platform (time-ordered UUIDs share their leading digits), and a cluster deleted and
    created again with the same id must not get its old, never-reused namespace back."""
    return f"{cluster.organization.slug}/{secrets.token_hex(6)}"


#: States in which nothing is owed until someone asks: the reconciler has no due time for them.
SETTLED = frozenset({State.READY, State.FAILED, State.DELETED})


def _transition(registry: Registry, to_state: str, *, message: str = "", **changes: object) -> None:
    """Move a locked ``registry`` to ``to_state`` and record the event, in one transaction.

    ``Ready`` follows the new state; ``Synced``, if the caller set it, is saved with it. A
    settled registry has no due time, and only a failure says whether it was transient.
    """
    if not registry.can_become(to_state):
        raise ValidationError(f"A {registry.state} registry cannot become {to_state}.")
    now = timezone.now()
    from_state, duration = registry.state, now - registry.state_changed_at
    registry.state = to_state
    registry.state_changed_at = now
    defaults: dict[str, object] = {"failure_transient": False, "attempt_deadline": None}
    if to_state in SETTLED:
        defaults["next_attempt_at"] = None
    changes = {**defaults, **changes}
    for field, value in changes.items():
        setattr(registry, field, value)
    conditions.ready_from_state(registry, now=now)
    RegistryEvent.objects.create(
        registry=registry,
        from_state=from_state,
        to_state=to_state,
        attempt=registry.attempts,
        duration=duration,
        message=message,
        created_at=now,
    )
    registry.save(update_fields=["state", "state_changed_at", "conditions", *changes])


def _left_as_is(registry: Registry | None) -> AttemptResult:
    """The result of an attempt that found nothing for it to do (gone, or moved on)."""
    return AttemptResult(state=registry.state if registry else None)


def _lock(registry_id: uuid.UUID | str) -> Registry | None:
    return Registry.objects.select_for_update().filter(pk=registry_id).first()


def _lock_with_cluster(registry: Registry) -> Registry | None:
    """Lock the registry's cluster row, then the registry row: the order ``cluster_delete``
    takes them in. Writing the cluster's agent environment needs the cluster row too (the
    foreign key check), so taking the registry first could deadlock with a deletion. The locked
    cluster is set on the registry it returns, so callers do not read it again."""
    cluster = None
    if registry.cluster_id is not None:
        cluster = Cluster.objects.select_for_update().filter(pk=registry.cluster_id).first()
    locked = _lock(registry.pk)
    if locked is not None and cluster is not None and locked.cluster_id == cluster.pk:
        locked.cluster = cluster
    return locked


def _begin_attempt(
    registry_id: uuid.UUID | str, states: tuple[str, ...]
) -> tuple[Registry, datetime] | AttemptResult:
    """Lock the registry for one attempt, in the caller's transaction. Returns it with the new
    attempt's deadline (its lease and fencing token, for the caller to record as it starts the
    attempt), or what to return instead: the registry is gone or in another state, an attempt
    already holds it (a duplicate message), or its attempt budget is spent (now ``failed``)."""
    registry = _lock(registry_id)
    if registry is None or registry.state not in states:
        return _left_as_is(registry)
    now = timezone.now()
    if registry.attempt_deadline is not None and registry.attempt_deadline > now:
        return _left_as_is(registry)
    if exhausted := _give_up_if_exhausted(registry):
        return exhausted
    return registry, now + attempt_lease()


def _still_ours(registry: Registry | None, state: str, deadline: datetime) -> TypeIs[Registry]:
    """Whether the attempt that set ``deadline`` may still record its outcome on the locked
    ``registry``: nothing moved it on, and no later attempt took it over."""
    return (
        registry is not None and registry.state == state and (registry.attempt_deadline == deadline)
    )


def _give_up_if_exhausted(registry: Registry) -> AttemptResult | None:
    """Fail a locked registry that has used its attempt budget. Attempts that never finished (a
    worker killed each time) count too, so a task that always dies is not redelivered forever."""
    if registry.attempts < settings.REGISTRY_PROVISION_MAX_ATTEMPTS:
        return None
    error = f"no attempt finished after {registry.attempts} attempts"
    conditions.not_synced(registry, conditions.RECONCILE_ERROR, error)
    _transition(registry, State.FAILED, message=error, last_error=error)
    logger.warning("registry.attempt.failed", extra={"registry_id": str(registry.pk)})
    return AttemptResult(state=State.FAILED, attempts=registry.attempts)


def _enqueue(registry: Registry) -> None:
    """Ask a worker to move ``registry`` on once the current transaction commits: provision it,
    or deprovision it once that was asked for.

    If the broker cannot take the message, the registry stays where it is: that row, not the
    message, is the record of the work owed, and the reconciler (``registries.reconcile``, Celery
    beat) enqueues it again once it is due. ``Synced`` says so meanwhile.
    """
    from registries.tasks import deprovision_registry, provision_registry  # they import us

    task = deprovision_registry if registry.deprovision_requested_at else provision_registry
    registry_id = str(registry.pk)

    def send() -> None:
        try:
            task.delay(registry_id)
        except Exception as exc:
            logger.exception(
                "registry.enqueue_failed", extra={"registry_id": registry_id, "task": task.name}
            )
            _record_enqueue_failure(registry_id, exc)

    transaction.on_commit(send)


def _record_enqueue_failure(registry_id: str, exc: Exception) -> None:
    """Say on the registry that its message did not reach the broker (best effort: the database
    may be what failed)."""
    message = (
        f"The task queue did not take the message ({type(exc).__name__}: {exc}); the "
        "reconciler enqueues it again once it is due."
    )
    try:
        with transaction.atomic():
            registry = _lock(registry_id)
            if registry is not None and registry.state not in SETTLED:
                conditions.not_synced(registry, conditions.ENQUEUE_FAILED, message)
                fields = ["conditions"]
                if registry.attempt_deadline is None:  # no attempt runs: due in one interval
                    registry.next_attempt_at = timezone.now() + reconcile_interval()
                    fields.append("next_attempt_at")
                registry.save(update_fields=fields)
    except Exception:
        logger.exception(
            "registry.enqueue_failure_not_recorded", extra={"registry_id": registry_id}
        )


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
                now = timezone.now()
                registry = Registry(
                    cluster=cluster,
                    namespace=registry_namespace(cluster),
                    driver=settings.REGISTRY_DRIVER,
                    state=State.PENDING,
                    state_changed_at=now,
                    created_at=now,
                    next_attempt_at=now + reconcile_interval(),
                )
                conditions.ready_from_state(registry, now=now)
                conditions.sync_pending(
                    registry,
                    conditions.CREATED,
                    "Provisioning is enqueued; no attempt has run yet.",
                    now=now,
                )
                registry.save(force_insert=True)
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
        begun = _begin_attempt(registry_id, (State.PENDING, State.PROVISIONING))
        if isinstance(begun, AttemptResult):
            return begun
        registry, deadline = begun
        resumed = registry.state == State.PROVISIONING
        _transition(
            registry,
            State.PROVISIONING,
            message="resumed after an interrupted attempt" if resumed else "",
            attempts=registry.attempts + 1,
            next_attempt_at=deadline,
            attempt_deadline=deadline,
        )
    log_extra = {"registry_id": str(registry.pk), "attempt": registry.attempts}
    logger.info("registry.provision.started", extra=log_extra)

    try:
        url = get_driver(registry.driver).provision(namespace=registry.namespace)
        with transaction.atomic():
            locked = _lock_with_cluster(registry)
            # A provisioning registry has its cluster: deletion moves it to deprovisioning.
            cluster = locked.cluster if locked is not None else None
            if not _still_ours(locked, State.PROVISIONING, deadline) or cluster is None:
                return _left_as_is(locked)
            registry = locked
            conditions.synced(
                registry, f"Provisioned; its URL is published as {REGISTRY_URL_VARIABLE}."
            )
            _transition(registry, State.READY, url=url, last_error="", ready_at=timezone.now())
            agent_environment_set(
                cluster=cluster,
                name=REGISTRY_URL_VARIABLE,
                value=url,
                source=ENVIRONMENT_SOURCE,
            )
    except Exception as exc:
        return _attempt_failed(
            registry_id, exc, working=State.PROVISIONING, deadline=deadline, log_extra=log_extra
        )
    logger.info("registry.provision.ready", extra={**log_extra, "url": url})
    return AttemptResult(state=State.READY, attempts=registry.attempts)


#: Errors that end an attempt and are recorded on the registry. Anything else (a database
#: outage, say) propagates, and the reconciler finds the row again once its lease expires.
_RECORDED_ERRORS = (DriverError, ValidationError, ValueError, TypeError, LookupError)


def _attempt_failed(
    registry_id: uuid.UUID | str,
    exc: Exception,
    *,
    working: str,
    deadline: datetime,
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
        if not _still_ours(registry, working, deadline):
            return _left_as_is(registry)
        retry = transient and registry.attempts < settings.REGISTRY_PROVISION_MAX_ATTEMPTS
        error = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
        delay = backoff_seconds(registry.attempts) if retry else 0.0
        if retry:
            conditions.not_synced(
                registry,
                conditions.RECONCILE_ERROR,
                f"Attempt {registry.attempts} failed: {error}. Retrying in {delay:.1f} s.",
            )
            _transition(
                registry,
                retry_state,
                message=f"will retry: {error}",
                last_error=error,
                next_attempt_at=timezone.now() + timedelta(seconds=delay) + reconcile_interval(),
            )
        else:
            reason = f"gave up after {registry.attempts} attempts" if transient else "not retryable"
            conditions.not_synced(registry, conditions.RECONCILE_ERROR, f"{reason}: {error}")
            _transition(
                registry,
                State.FAILED,
                message=f"{reason}: {error}",
                last_error=error,
                failure_transient=transient,
            )
    logger.warning(
        "registry.attempt.retrying" if retry else "registry.attempt.failed",
        extra={**log_extra, "state": working, "error": error},
    )
    return AttemptResult(
        state=registry.state, attempts=registry.attempts, retry=retry, retry_in=delay
    )


def registry_retry(
    *, registry: Registry, why: str = "retry requested", only_transient: bool = False
) -> Registry:
    """Start a ``failed`` registry again, with a fresh attempt budget: provisioning, or
    deprovisioning if that is what failed. ``why`` starts the event's message;
    ``only_transient`` (the reconciler) retries only a registry whose failure was transient."""
    with transaction.atomic():
        locked = _lock(registry.pk)
        if locked is None or locked.state != State.FAILED:
            state = locked.state if locked else "deleted"
            raise ValidationError(f"Only a failed registry can be retried; this one is {state}.")
        if only_transient and not locked.failure_transient:
            raise ValidationError("Its failure was not transient: an operator retries it.")
        next_state = State.DEPROVISIONING if locked.deprovision_requested_at else State.PENDING
        message = f"{why} after: {locked.last_error}" if locked.last_error else why
        conditions.sync_pending(locked, conditions.RETRY_REQUESTED, message)
        _transition(
            locked,
            next_state,
            message=message,
            attempts=0,
            next_attempt_at=timezone.now() + reconcile_interval(),
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
        now = timezone.now()
        conditions.sync_pending(locked, conditions.DEPROVISION_REQUESTED, reason, now=now)
        _transition(
            locked,
            State.DEPROVISIONING,
            message=reason,
            deprovision_requested_at=now,
            attempts=0,
            next_attempt_at=now + reconcile_interval(),
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
        begun = _begin_attempt(registry_id, (State.DEPROVISIONING,))
        if isinstance(begun, AttemptResult):
            return begun
        registry, deadline = begun
        registry.attempts += 1
        registry.next_attempt_at = registry.attempt_deadline = deadline
        registry.save(update_fields=["attempts", "next_attempt_at", "attempt_deadline"])
    log_extra = {"registry_id": str(registry.pk), "attempt": registry.attempts}
    logger.info("registry.deprovision.started", extra=log_extra)
    try:
        deleted = get_driver(registry.driver).deprovision(namespace=registry.namespace)
        with transaction.atomic():
            locked = _lock(registry_id)
            if not _still_ours(locked, State.DEPROVISIONING, deadline):
                return _left_as_is(locked)
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
                conditions.synced(registry, f"{swept}; the registry is deleted.")
                _transition(registry, State.DELETED, message=swept, last_error="")
            else:
                # Not a failure: the attempt budget starts again for the final sweep.
                message = (
                    f"{swept}; sweeping again after {last_token_expiry:%Y-%m-%d %H:%M:%S} UTC, "
                    "when every registry token issued before has expired"
                )
                conditions.synced(registry, message)
                _transition(
                    registry,
                    State.DEPROVISIONING,
                    message=message,
                    attempts=0,
                    last_error="",
                    next_attempt_at=last_token_expiry,
                )
    except Exception as exc:
        return _attempt_failed(
            registry_id, exc, working=State.DEPROVISIONING, deadline=deadline, log_extra=log_extra
        )
    log_extra["manifests"] = deleted
    logger.info(
        "registry.deprovision.deleted" if final else "registry.deprovision.swept", extra=log_extra
    )
    return AttemptResult(state=registry.state, attempts=registry.attempts)


def registries_claim_due(*, now: datetime | None = None) -> list[Registry]:
    """Enqueue an attempt for every registry that is due (``selectors.registries_due``), each
    leased for ``attempt_lease()`` so that the next pass does not enqueue it again while the
    attempt waits or runs. Returns them.

    A ``provisioning`` registry whose lease expired goes back to ``pending``: its attempt died.
    ``Synced`` says why each was enqueued again, except a final sweep that is simply due.
    """
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            registries_due(now=now, interval=reconcile_interval()).select_for_update(
                skip_locked=True
            )[
                # rows an attempt holds right now
                : settings.REGISTRY_RECONCILE_BATCH
            ]
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
            if message:
                conditions.not_synced(registry, conditions.STALLED, message, now=now)
            if registry.state == State.PROVISIONING:
                _transition(registry, State.PENDING, message=message, next_attempt_at=lease)
            else:
                registry.next_attempt_at, registry.attempt_deadline = lease, None
                registry.save(update_fields=["next_attempt_at", "attempt_deadline", "conditions"])
            _enqueue(registry)
    for registry in due:
        logger.warning(
            "registry.redriven", extra={"registry_id": str(registry.pk), "state": registry.state}
        )
    return due


def registry_republish(*, registry: Registry) -> str | None:
    """Publish a ready registry's URL to its cluster's jobs again if they do not receive it (the
    variable is missing or holds another value). Returns what was repaired, or None."""
    with transaction.atomic():
        locked = _lock_with_cluster(registry)
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
            conditions.not_synced(locked, conditions.RECONCILE_ERROR, problem)
            # Jobs do not receive the URL: the registry is of no use to them.
            conditions.condition_set(
                locked, conditions.READY, conditions.FALSE, conditions.NOT_PUBLISHED, problem
            )
        else:
            repaired = f"re-published {REGISTRY_URL_VARIABLE}: it was {what}"
            conditions.synced(locked, f"{repaired[0].upper()}{repaired[1:]}.")
            ready = conditions.condition_get(locked, conditions.READY)
            if ready and ready["reason"] == conditions.NOT_PUBLISHED:
                conditions.ready_from_state(locked)
        locked.save(update_fields=["conditions"])
    logger.warning(
        "registry.republished" if repaired else "registry.republish_failed",
        extra={"registry_id": str(registry.pk), "was": what},
    )
    return repaired


def backend_check(driver: str) -> tuple[bool, str]:
    """Whether the registry backend answers and still demands and accepts our tokens (the check
    provisioning makes), and what was seen."""
    try:
        return True, get_driver(driver).check_api()
    except DriverError as exc:
        return False, str(exc)


def registry_verify(*, registry: Registry) -> Registry:
    """Check now that the registry's backend answers and trusts our tokens (``backend_check``),
    and record what was seen on the registry. Changes no state."""
    ok, seen = backend_check(registry.driver)
    registry.verified_at, registry.verified_ok, registry.verification = timezone.now(), ok, seen
    registry.save(update_fields=["verified_at", "verified_ok", "verification"])
    logger.info("registry.verified", extra={"registry_id": str(registry.pk), "ok": ok})
    return registry


@dataclass(frozen=True)
class CanaryResult:
    ok: bool
    latency: timedelta
    seen: str


def registry_canary(*, registry_id: uuid.UUID | str) -> CanaryResult | None:
    """Run the health canary of a ``ready`` registry: push a small blob to the reserved repository
    in its namespace, read it back and delete it, with a token we mint as a job's would be.

    Records when, whether it passed, how long it took and what was seen. A failure sets ``Ready``
    False (reason ``CanaryFailed``); the next pass sets it True again. The state stays ``ready``:
    the canary reports, it does not stop jobs from trying. None if the registry is not ready.
    """
    registry = Registry.objects.ready().filter(pk=registry_id).first()
    if registry is None:
        return None
    started = time.monotonic()
    try:
        seen, ok = get_driver(registry.driver).canary(namespace=registry.namespace), True
    except DriverError as exc:
        seen, ok = str(exc), False
    result = CanaryResult(ok=ok, latency=timedelta(seconds=time.monotonic() - started), seen=seen)
    with transaction.atomic():
        locked = _lock(registry_id)
        if locked is None or locked.state != State.READY:
            return result
        now = timezone.now()
        locked.canary_at, locked.canary_ok = now, ok
        locked.canary_latency, locked.canary_message = result.latency, seen
        ready = conditions.condition_get(locked, conditions.READY)
        if not ok:
            conditions.condition_set(
                locked,
                conditions.READY,
                conditions.FALSE,
                conditions.CANARY_FAILED,
                f"The health canary failed: {seen}",
                now=now,
            )
        elif ready is not None and ready["reason"] == conditions.CANARY_FAILED:
            conditions.condition_set(
                locked,
                conditions.READY,
                conditions.TRUE,
                conditions.CANARY_PASSED,
                f"The health canary passes again ({_milliseconds(result.latency)}).",
                now=now,
            )
        locked.save(
            update_fields=[
                "canary_at", "canary_ok", "canary_latency", "canary_message", "conditions"
            ]
        )  # fmt: skip
    log = logger.info if ok else logger.warning
    log(
        "registry.canary.passed" if ok else "registry.canary.failed",
        extra={
            "registry_id": str(registry_id),
            "latency_ms": round(result.latency.total_seconds() * 1000, 1),
            **({} if ok else {"error": seen}),
        },
    )
    return result


def _milliseconds(duration: timedelta) -> str:
    return f"{duration.total_seconds() * 1000:.0f} ms"
