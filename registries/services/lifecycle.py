"""The registry's lifecycle: the one transition helper, attempts and their backoff, enqueueing,
creation and retry.

Every state change goes through ``transition`` with the registry row locked, which writes the
``RegistryEvent`` in the same transaction. Network calls to the registry happen outside any
transaction, so a slow registry never holds a database lock.

Tasks are enqueued by name (``PROVISION_TASK``, ``DEPROVISION_TASK``), not by importing
``registries.tasks``: the tasks call these services, so importing them back would close a circle
(``tasks -> services -> tasks``). ``RegistriesConfig.ready`` imports the tasks, so every process
that enqueues has them registered.
"""

from __future__ import annotations

import logging
import random
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from typing_extensions import TypeIs

from clusters.interface import Cluster
from controlplane import metrics
from controlplane.celery import app as celery_app
from controlplane.compiled import insert_row_ignoring_conflicts, insert_rows, save_fields
from registries import conditions
from registries.conditions import SyncedCondition
from registries.drivers import DriverError, RegistryUnavailable
from registries.locks import registry_lock
from registries.models import Registry, RegistryEvent, State
from registries.services.audit import registry_audit

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")

NAMESPACE_ATTEMPTS = 3
ENVIRONMENT_SOURCE = "registry"
#: The Celery tasks that move a registry on (``registries.tasks``), by name.
PROVISION_TASK = "registries.provision"
DEPROVISION_TASK = "registries.deprovision"


@dataclass(frozen=True)
class AttemptResult:
    """What one provisioning or deprovisioning attempt left behind; ``retry``: try again."""

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


def transition(
    registry: Registry,
    to_state: str,
    *,
    synced: SyncedCondition | None = None,
    message: str = "",
    **changes: object,
) -> None:
    """Move a locked ``registry`` to ``to_state`` and record the event, in one transaction.

    ``Synced`` is set to ``synced`` (when given) and ``Ready`` follows the new state; both are
    saved with it. A settled registry has no due time, and only a failure says whether it was
    transient.
    """
    transitions = Transitions(registry)
    transitions.to(to_state, synced=synced, message=message, **changes)
    transitions.save()


@dataclass
class Transitions:
    """Transitions of one locked registry (``to``), written together (``save``): their events in
    one INSERT and the registry's changed fields in one UPDATE. ``transition`` is one of them; an
    attempt that starts and ends in one transaction makes two."""

    registry: Registry
    events: list[RegistryEvent] = field(default_factory=list)
    fields: set[str] = field(default_factory=set)

    def to(
        self,
        to_state: str,
        *,
        synced: SyncedCondition | None = None,
        message: str = "",
        **changes: object,
    ) -> None:
        """Move the registry to ``to_state`` in memory, with its event (see ``transition``)."""
        registry = self.registry
        if not registry.can_become(to_state):
            raise ValidationError(f"A {registry.state} registry cannot become {to_state}.")
        now = timezone.now()
        if synced is not None:
            # Stamped with the transition's own moment (unless the caller chose one), so that
            # ``Synced`` and ``state_changed_at`` name the same instant.
            replace(synced, at=synced.at or now).set_on(registry)
        from_state, duration = registry.state, now - registry.state_changed_at
        registry.state = to_state
        registry.state_changed_at = now
        defaults: dict[str, object] = {"failure_transient": False, "attempt_deadline": None}
        if to_state in SETTLED:
            defaults["next_attempt_at"] = None
        changes = {**defaults, **changes}
        for name, value in changes.items():
            setattr(registry, name, value)
        conditions.ready_from_state(registry, now=now)
        self.events.append(
            RegistryEvent(
                registry=registry,
                from_state=from_state,
                to_state=to_state,
                attempt=registry.attempts,
                duration=duration,
                message=message,
                created_at=now,
            )
        )
        self.fields.update(["state", "state_changed_at", "conditions", *changes])

    def save(self) -> None:
        insert_rows(self.events)  # bulk_create, compiled once
        save_fields(self.registry, self.fields)  # save(update_fields=...), compiled once
        self.events, self.fields = [], set()


def left_as_is(registry: Registry | None) -> AttemptResult:
    """The result of an attempt that found nothing for it to do (gone, or moved on)."""
    return AttemptResult(state=registry.state if registry else None)


def begin_attempt(
    registry_id: uuid.UUID | str, states: tuple[str, ...]
) -> tuple[Registry, datetime] | AttemptResult:
    """Lock the registry for one attempt, in the caller's transaction. Returns it with the new
    attempt's deadline (its lease and fencing token, for the caller to record as it starts the
    attempt), or what to return instead: the registry is gone or in another state, an attempt
    already holds it (a duplicate message), or its attempt budget is spent (now ``failed``)."""
    return attempt_may_begin(registry_lock(registry_id), states)


def attempt_may_begin(
    registry: Registry | None, states: tuple[str, ...]
) -> tuple[Registry, datetime] | AttemptResult:
    """``begin_attempt`` for a registry the caller has locked (or found gone)."""
    if registry is None or registry.state not in states:
        return left_as_is(registry)
    now = timezone.now()
    if registry.attempt_deadline is not None and registry.attempt_deadline > now:
        return left_as_is(registry)
    if exhausted := _give_up_if_exhausted(registry):
        return exhausted
    return registry, now + attempt_lease()


def still_ours(registry: Registry | None, state: str, deadline: datetime) -> TypeIs[Registry]:
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
    transition(
        registry,
        State.FAILED,
        synced=SyncedCondition.false(conditions.RECONCILE_ERROR, error),
        message=error,
        last_error=error,
    )
    logger.warning("registry.attempt.failed", extra={"registry_id": str(registry.pk)})
    operation = "deprovision" if registry.deprovision_requested_at else "provision"
    metrics.ATTEMPT_FAILURES.labels(operation, "exhausted").inc()
    return AttemptResult(state=State.FAILED, attempts=registry.attempts)


#: Errors that end an attempt and are recorded on the registry. Anything else (a database
#: outage, say) propagates, and the reconciler finds the row again once its lease expires.
RECORDED_ERRORS = (DriverError, ValidationError, ValueError, TypeError, LookupError)


#: What tenants read for an error that is not the registry's (a bug, bad data): the operators
#: have the exception in the console and the logs.
INTERNAL_ERROR = "An internal error stopped the attempt; the operators have the details"


def error_texts(exc: Exception) -> tuple[str, str]:
    """``(public, detail)`` for a failed attempt: what the cluster's tenants read (the REST API's
    ``last_error``, conditions and events) and what operators read (the console, the logs). A
    driver decides both where the error is made (``DriverError.public``); anything else is ours,
    and its text (a class name, a library's words) is for operators only."""
    if isinstance(exc, DriverError):
        return exc.public, exc.detail
    return INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"


def attempt_failed(
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
    if not isinstance(exc, RECORDED_ERRORS):
        raise exc
    if not isinstance(exc, DriverError):
        # A bug or bad data, not the registry: retrying the same code would fail the same way.
        logger.exception("registry.attempt.error", extra=log_extra)
    transient = isinstance(exc, RegistryUnavailable)
    retry_state = State.PENDING if working == State.PROVISIONING else working
    with transaction.atomic():
        registry = registry_lock(registry_id)
        if not still_ours(registry, working, deadline):
            return left_as_is(registry)
        retry = transient and registry.attempts < settings.REGISTRY_PROVISION_MAX_ATTEMPTS
        error, detail = error_texts(exc)
        delay = backoff_seconds(registry.attempts) if retry else 0.0
        if retry:
            transition(
                registry,
                retry_state,
                synced=SyncedCondition.false(
                    conditions.RECONCILE_ERROR,
                    f"Attempt {registry.attempts} failed: {error}. Retrying in {delay:.1f} s.",
                    detail=detail,
                ),
                message=f"will retry: {error}",
                last_error=error,
                next_attempt_at=timezone.now() + timedelta(seconds=delay) + reconcile_interval(),
            )
        else:
            reason = f"gave up after {registry.attempts} attempts" if transient else "not retryable"
            transition(
                registry,
                State.FAILED,
                synced=SyncedCondition.false(
                    conditions.RECONCILE_ERROR, f"{reason}: {error}", detail=detail
                ),
                message=f"{reason}: {error}",
                last_error=error,
                failure_transient=transient,
            )
    logger.warning(
        "registry.attempt.retrying" if retry else "registry.attempt.failed",
        extra={**log_extra, "state": working, "error": detail},
    )
    # Why: the registry did not answer, it refused otherwise, or the error is ours.
    reason = "registry" if isinstance(exc, DriverError) else "internal"
    operation = "provision" if working == State.PROVISIONING else "deprovision"
    metrics.ATTEMPT_FAILURES.labels(operation, "unavailable" if transient else reason).inc()
    return AttemptResult(
        state=registry.state, attempts=registry.attempts, retry=retry, retry_in=delay
    )


def enqueue(registry: Registry) -> None:
    """Ask a worker to move ``registry`` on once the current transaction commits: provision it,
    or deprovision it once that was asked for.

    If the broker cannot take the message, the registry stays where it is: that row, not the
    message, is the record of the work owed, and the reconciler (``registries.reconcile``, Celery
    beat) enqueues it again once it is due. ``Synced`` says so meanwhile.
    """
    task_name = DEPROVISION_TASK if registry.deprovision_requested_at else PROVISION_TASK
    registry_id = str(registry.pk)

    def send() -> None:
        try:
            # The registered task itself, so the message is the one ``task.delay`` always sent
            # (its time limits and options); ``send_task`` would leave those out.
            celery_app.tasks[task_name].delay(registry_id)
        except Exception as exc:
            logger.exception(
                "registry.enqueue_failed", extra={"registry_id": registry_id, "task": task_name}
            )
            _record_enqueue_failure(registry_id, exc)

    transaction.on_commit(send)


def _record_enqueue_failure(registry_id: str, exc: Exception) -> None:
    """Say on the registry that its message did not reach the broker (best effort: the database
    may be what failed)."""
    # Tenants read the message (the broker's address and library text are the operators').
    message = "The task queue did not take the message; the reconciler enqueues it again once due."
    detail = f"{type(exc).__name__}: {exc}"
    try:
        with transaction.atomic():
            registry = registry_lock(registry_id)
            if registry is not None and registry.state not in SETTLED:
                failed = SyncedCondition.false(conditions.ENQUEUE_FAILED, message, detail=detail)
                failed.set_on(registry)
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
    enqueued. The row is inserted with ``ON CONFLICT DO NOTHING ... RETURNING`` its id, so that
    neither a registry the cluster has already nor one a concurrent transaction created first
    (the one-to-one constraint is the last guard) raises an error in the caller's transaction,
    and no savepoint is needed; only when nothing was inserted is the cluster's registry read.
    If the namespace drawn was taken (48 random bits), the cluster has none and another is drawn.
    """
    for _ in range(NAMESPACE_ATTEMPTS):
        with transaction.atomic(savepoint=False):
            candidate = _new_registry(cluster)
            # Both INSERTs compiled once, and nothing read back when the row went in: they run
            # between the row's ``created_at`` and the commit that enqueues its provisioning,
            # which P3 times.
            if insert_row_ignoring_conflicts(candidate):
                insert_rows(
                    [
                        RegistryEvent(
                            registry=candidate,
                            from_state="",
                            to_state=State.PENDING,
                            message="created",
                            created_at=candidate.created_at,
                        )
                    ]
                )
                break
            found = Registry.objects.filter(cluster=cluster).values_list("pk", flat=True).first()
        if found is not None:  # it had one, or a concurrent transaction created it first
            return Registry.objects.get(pk=found)
    else:
        raise IntegrityError(f"No namespace was free for cluster {cluster.pk}: drawn three times.")
    logger.info(
        "registry.created",
        extra={"registry_id": str(candidate.pk), "cluster_id": str(cluster.pk)},
    )
    enqueue(candidate)
    return candidate


def _new_registry(cluster: Cluster) -> Registry:
    """A ``pending`` registry for ``cluster``, with a new namespace, not saved."""
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
    SyncedCondition.unknown(
        conditions.CREATED, "Provisioning is enqueued; no attempt has run yet.", at=now
    ).set_on(registry)
    return registry


def registry_retry(
    *, registry: Registry, why: str = "retry requested", only_transient: bool = False
) -> Registry:
    """Start a ``failed`` registry again, with a fresh attempt budget: provisioning, or
    deprovisioning if that is what failed. ``why`` starts the event's message;
    ``only_transient`` (the reconciler) retries only a registry whose failure was transient."""
    with transaction.atomic():
        locked = registry_lock(registry.pk)
        if locked is None or locked.state != State.FAILED:
            state = locked.state if locked else "deleted"
            raise ValidationError(f"Only a failed registry can be retried; this one is {state}.")
        if only_transient and not locked.failure_transient:
            raise ValidationError("Its failure was not transient: an operator retries it.")
        next_state = State.DEPROVISIONING if locked.deprovision_requested_at else State.PENDING
        message = f"{why} after: {locked.last_error}" if locked.last_error else why
        transition(
            locked,
            next_state,
            synced=SyncedCondition.unknown(conditions.RETRY_REQUESTED, message),
            message=message,
            attempts=0,
            next_attempt_at=timezone.now() + reconcile_interval(),
            last_error="",
        )
        enqueue(locked)
        if not only_transient:  # the reconciler's retries are RegistryEvents, not audit rows
            registry_audit(locked, "REGISTRY_RETRIED", {"state": [State.FAILED, next_state]})
    logger.info("registry.retry_requested", extra={"registry_id": str(locked.pk)})
    return locked
