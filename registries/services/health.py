"""Health: whether a registry's backend answers and trusts our tokens (``backend_check``, "verify
now" in the console), the health canaries (a backend's, and a ready registry's namespace's, with
the sample of namespaces each round checks), and the registries app's readiness checks for
``/readyz`` (controlplane/health.py). None of these changes a state."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field
from django.utils import timezone

from controlplane import metrics
from registries import conditions
from registries.backends import Backend, backends_all
from registries.drivers import DriverError, RegistryDriver, RegistryUnavailable, get_driver
from registries.key_store import key_store
from registries.locks import registries_canary_due_lock, registries_lock_batch, registry_lock
from registries.models import Registry, RegistryBackend, RegistryQuerySet, State
from registries.services.audit import registry_audit
from registries.services.placement import registry_backend

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")


def backend_check(backend: Backend | None, driver: str | None = None) -> tuple[bool, str]:
    """Whether the registry backend answers and still demands and accepts our tokens (the check
    provisioning makes), and what was seen."""
    try:
        return True, get_driver(driver or settings.REGISTRY_DRIVER, backend).check_api()
    except DriverError as exc:
        return False, str(exc)


def registry_verify(*, registry: Registry) -> Registry:
    """Check now that the registry's backend answers and trusts our tokens (``backend_check``),
    and record what was seen on the registry. Changes no state."""
    try:
        ok, seen = backend_check(registry_backend(registry), registry.driver)
    except DriverError as exc:
        ok, seen = False, str(exc)
    registry.verified_at, registry.verified_ok, registry.verification = timezone.now(), ok, seen
    with transaction.atomic():
        registry.save(update_fields=["verified_at", "verified_ok", "verification"])
        registry_audit(registry, "REGISTRY_VERIFIED", {"ok": ok, "seen": seen})
    logger.info("registry.verified", extra={"registry_id": str(registry.pk), "ok": ok})
    return registry


#: The namespace a backend's own canary writes to. It has a dot, which no organization's slug
#: (so no registry's namespace) may contain: no cluster's jobs can reach it.
BACKEND_CANARY_NAMESPACE = "controlplane.canary"

#: How many registries a backend canary records its outcome on per transaction.
BACKEND_CANARY_BATCH = 500

#: What recording a canary writes (``conditions`` last).
_CANARY_FIELDS = [
    "canary_at", "canary_ok", "canary_latency", "canary_message", "canary_by_backend", "conditions"
]  # fmt: skip


@dataclass(frozen=True)
class CanaryResult:
    ok: bool
    latency: timedelta
    seen: str
    #: For operators: what the registry or the library said when it failed ("" if it passed).
    detail: str = ""
    #: Not run: a garbage collection holds the backend's window (pushes refused). Nothing is
    #: recorded (``Ready`` stays as it was); ``ok`` is True, since nothing failed.
    maintenance: bool = False


@dataclass(frozen=True)
class BackendCanaryResult:
    backend: str
    result: CanaryResult
    #: The registries it recorded its outcome on: all the backend's ready registries not failing
    #: yet when it failed; those whose failure it had recorded when it passes again.
    recorded: int
    #: Registries whose own namespace's canary had failed, made due again since it passes.
    rechecked: int


def _canary(driver: Callable[[], RegistryDriver], backend: str, namespace: str) -> CanaryResult:
    """Push, read back and delete a blob in ``namespace`` (``driver().canary``) on ``backend``,
    and count it."""
    started = time.monotonic()
    detail = ""
    try:
        seen, ok = driver().canary(namespace=namespace), True
    except DriverError as exc:
        # Tenants read ``seen`` (the API's canary and Ready); operators the detail too.
        seen, detail, ok = exc.public, exc.detail, False
    latency = timedelta(seconds=time.monotonic() - started)
    outcome = "passed" if ok else "failed"
    metrics.CANARIES.labels(backend, outcome).inc()
    metrics.CANARY_SECONDS.labels(backend, outcome).observe(latency.total_seconds())
    return CanaryResult(ok=ok, latency=latency, seen=seen, detail=detail)


def _maintenance(backend: Backend | None) -> CanaryResult | None:
    """The result of a canary that must not push: ``backend``'s maintenance window refuses
    pushes (read now, not from the per-process backends cache, so that a window that just
    opened or ended is seen). None when it may run. A push would be refused, then fail once
    the replicas are read-only: every registry would go ``Ready`` False on every window."""
    if backend is None:
        return None
    until = (
        RegistryBackend.objects.filter(pk=backend.id)
        .values_list("pushes_refused_until", flat=True)
        .first()
    )
    seconds = replace(backend, pushes_refused_until=until).push_retry_after(timezone.now())
    if not seconds:
        return None
    metrics.CANARIES.labels(backend.name, "maintenance").inc()
    return CanaryResult(
        ok=True,
        latency=timedelta(0),
        seen=(
            "Registry maintenance: garbage collection on this registry's backend refuses "
            f"pushes for {seconds} more seconds; the canary does not push until it ends."
        ),
        maintenance=True,
    )


def _canary_record(
    registry: Registry, result: CanaryResult, *, now: datetime, by_backend: bool
) -> None:
    """Record a canary's outcome on a locked, ready registry (not saved): its ``canary_*``
    fields, and ``Ready`` False (``CanaryFailed``) if it failed, or True again
    (``CanaryPassed``) if it passed after a failed one."""
    registry.canary_at, registry.canary_ok = now, result.ok
    registry.canary_latency, registry.canary_message = result.latency, result.seen
    registry.canary_by_backend = by_backend
    ready = conditions.condition_get(registry, conditions.READY)
    if not result.ok:
        conditions.condition_set(
            registry,
            conditions.READY,
            conditions.FALSE,
            conditions.CANARY_FAILED,
            f"The health canary failed: {result.seen}",
            now=now,
            detail=result.detail,
        )
    elif ready is not None and ready["reason"] == conditions.CANARY_FAILED:
        conditions.condition_set(
            registry,
            conditions.READY,
            conditions.TRUE,
            conditions.CANARY_PASSED,
            f"The health canary passes again ({_milliseconds(result.latency)}).",
            now=now,
        )


def registry_canary(*, registry_id: uuid.UUID | str) -> CanaryResult | None:
    """Run the health canary of a ``ready`` registry's namespace: push a small blob to the
    reserved repository in its namespace, read it back and delete it, with a token we mint as a
    job's would be.

    Records when, whether it passed, how long it took and what was seen. A failure sets ``Ready``
    False (reason ``CanaryFailed``); the next pass sets it True again. The state stays ``ready``:
    the canary reports, it does not stop jobs from trying. None if the registry is not ready.
    While its backend's maintenance window refuses pushes it does not run (``maintenance``).
    """
    registry = Registry.objects.ready().filter(pk=registry_id).first()
    if registry is None:
        return None
    try:
        placed = registry_backend(registry)
    except DriverError:
        placed = None  # its backend is gone: the canary fails below with why
    waiting = _maintenance(placed)
    if waiting is not None:
        logger.info("registry.canary.maintenance", extra={"registry_id": str(registry_id)})
        return waiting
    result = _canary(
        lambda: get_driver(registry.driver, registry_backend(registry)),
        placed.name if placed else "",
        registry.namespace,
    )
    with transaction.atomic():
        locked = registry_lock(registry_id)
        if locked is None or locked.state != State.READY:
            return result
        _canary_record(locked, result, now=timezone.now(), by_backend=False)
        locked.save(update_fields=_CANARY_FIELDS)
    log = logger.info if result.ok else logger.warning
    log(
        "registry.canary.passed" if result.ok else "registry.canary.failed",
        extra={
            "registry_id": str(registry_id),
            "latency_ms": round(result.latency.total_seconds() * 1000, 1),
            **({} if result.ok else {"error": result.detail}),
        },
    )
    return result


def canary_backends() -> list[str]:
    """The registry backends that get a canary of their own every round, by name: every one,
    active or draining (a draining backend still serves its registries)."""
    return [backend.name for backend in backends_all()]


def backend_canary(*, backend: str) -> BackendCanaryResult:
    """Run the canary of a whole registry backend, in its reserved namespace
    (``BACKEND_CANARY_NAMESPACE``): what every registry on it shares (the registry answering,
    its storage, its trust in our signing key), checked once instead of once per namespace.

    Its outcome is recorded on the backend's ready registries only where it changes something:
    a failure on each one that is not failing yet (so ``Ready`` says so within one round, for
    every registry, whatever their turn in the sample), and a pass on each one whose failure it
    had recorded itself. A registry whose own namespace's canary failed keeps that failure until
    its own canary passes, and while the backend passes it is due again at once (its failure
    may have been the backend's, seen by its own canary first). Rows another transaction holds
    are left for the next round. While the backend's maintenance window refuses pushes it
    does not run and records nothing (``maintenance``): the window is not a failure.
    """
    found = next((b for b in backends_all() if b.name == backend), None)
    if found is None:
        raise DriverError(f"No registry backend named {backend!r}.")
    waiting = _maintenance(found)
    if waiting is not None:
        logger.info("registry.backend_canary.maintenance", extra={"backend": backend})
        return BackendCanaryResult(backend, waiting, 0, 0)
    result = _canary(
        lambda: get_driver(settings.REGISTRY_DRIVER, found), backend, BACKEND_CANARY_NAMESPACE
    )
    ready = Registry.objects.ready().filter(backend_id=found.id)
    if result.ok:
        recorded = _canary_record_all(ready.filter(canary_ok=False, canary_by_backend=True), result)
        now = timezone.now()
        rechecked = ready.filter(
            canary_ok=False, canary_by_backend=False, canary_due_at__gt=now
        ).update(canary_due_at=now)
    else:
        recorded, rechecked = _canary_record_all(ready.exclude(canary_ok=False), result), 0
    log = logger.info if result.ok else logger.warning
    log(
        "registry.backend_canary.passed" if result.ok else "registry.backend_canary.failed",
        extra={
            "backend": backend,
            "latency_ms": round(result.latency.total_seconds() * 1000, 1),
            "registries_recorded": recorded,
            **({} if result.ok else {"error": result.detail}),
        },
    )
    return BackendCanaryResult(backend, result, recorded, rechecked)


def _canary_record_all(registries: RegistryQuerySet, result: CanaryResult) -> int:
    """Record a backend canary's outcome on every registry of ``registries``, a batch per
    transaction in primary-key order; returns how many. The ``canary_*`` fields are the same
    for all: one UPDATE a batch; ``conditions`` are each registry's own."""
    recorded, after = 0, None
    while True:
        with transaction.atomic():
            batch = registries_lock_batch(
                registries.only("pk", "conditions"), after=after, limit=BACKEND_CANARY_BATCH
            )
            if not batch:
                return recorded
            now = timezone.now()
            for registry in batch:
                _canary_record(registry, result, now=now, by_backend=True)
            Registry.objects.filter(pk__in=[registry.pk for registry in batch]).update(
                **{field: getattr(batch[0], field) for field in _CANARY_FIELDS[:-1]}
            )
            _conditions_save(batch)
        recorded, after = recorded + len(batch), batch[-1].pk


def _conditions_save(registries: list[Registry]) -> None:
    """Save each registry's ``conditions``: one UPDATE a row, sent together (psycopg pipelines
    ``executemany``). ``bulk_update`` would build a CASE of one branch per row, in Python, for
    about 2 ms a row: minutes for a backend with 100,000 registries."""
    conditions = cast("Field[Any, Any]", Registry._meta.get_field("conditions"))
    pk = cast("Field[Any, Any]", Registry._meta.get_field("id"))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {Registry._meta.db_table} SET {conditions.column} = %s "  # noqa: S608 - names from the model
            f"WHERE {pk.column} = %s",
            [
                (
                    conditions.get_db_prep_save(registry.conditions, connection),
                    pk.get_db_prep_value(registry.pk, connection),
                )
                for registry in registries
            ],
        )


def registries_canary_claim(*, now: datetime | None = None) -> list[uuid.UUID]:
    """Take the ready registries whose namespace is due for a canary, at most
    ``REGISTRY_CANARY_SAMPLE``, longest due first, and make each due again
    ``REGISTRY_CANARY_PERIOD_SECONDS`` from now (whether or not its canary then runs: a canary
    message that expires unrun waits for the registry's next turn). Returns their ids."""
    now = now or timezone.now()
    with transaction.atomic():
        due = registries_canary_due_lock(now=now, limit=settings.REGISTRY_CANARY_SAMPLE)
        if due:
            period = timedelta(seconds=settings.REGISTRY_CANARY_PERIOD_SECONDS)
            Registry.objects.filter(pk__in=due).update(canary_due_at=now + period)
    return due


def _milliseconds(duration: timedelta) -> str:
    return f"{duration.total_seconds() * 1000:.0f} ms"


def readiness_signing_key() -> None:
    """``/readyz``: the token service can load its signing key (raises ``SigningKeyMissing``).
    Runs on a readyz thread (``controlplane.health``): the connection a re-check opened there is
    closed, as the database check closes its own."""
    try:
        key_store().load()
    finally:
        connection.close()


class BackendsUnavailable(RegistryUnavailable):
    """No registry backend answers (``/readyz``); ``detail_by_part`` says what each did."""

    def __init__(self, detail_by_part: dict[str, str]) -> None:
        super().__init__(f"No registry backend answers: {detail_by_part}")
        self.detail_by_part = detail_by_part


#: The share of ``HEALTH_CHECK_TIMEOUT_SECONDS`` the backends' probes get in all: the rest is
#: left for the backends' read and the threads, so a hung backend is reported as such, within
#: the readiness check's own timeout, instead of failing the whole check.
READINESS_PROBE_SHARE = 0.75

# Every backend is asked at once, so one that hangs costs the budget, not the sum of them; a
# probe abandoned at the budget ends at its own timeout in the background.
_probes = ThreadPoolExecutor(max_workers=32, thread_name_prefix="readyz-backend")


def readiness_registry() -> dict[str, str]:
    """``/readyz``: each registry backend answers ``GET /v2/`` (401 without a token, as
    expected); what each did, by name. Every backend is asked at once, all within
    ``READINESS_PROBE_SHARE`` of ``HEALTH_CHECK_TIMEOUT_SECONDS``: one that has not answered by
    then is ``timeout``. Fails only when none answers: one backend down or hung leaves the API
    serving the others' registries (its registries' canaries and ``Ready`` say so). Lighter
    than ``backend_check``, which also signs a token and asks twice: this runs on every probe.

    Runs on a readyz thread (``controlplane.health``): the connection reading the backends
    opened there (once every ``REGISTRY_BACKENDS_CACHE_SECONDS``) is closed, unless the caller
    holds it in a transaction."""
    try:
        backends = backends_all()
    finally:
        if not connection.in_atomic_block:
            connection.close()
    budget = settings.HEALTH_CHECK_TIMEOUT_SECONDS * READINESS_PROBE_SHARE
    futures = {
        backend.name: _probes.submit(_probe, backend.api_url, budget) for backend in backends
    }
    wait(futures.values(), timeout=budget)
    seen = {
        name: future.result() if future.done() else "timeout" for name, future in futures.items()
    }
    if "ok" not in seen.values():
        raise BackendsUnavailable(seen)
    return seen


def _probe(api_url: str, timeout: float) -> str:
    """``GET /v2/`` of one backend: ``ok``, or what went wrong."""
    try:
        response = requests.get(f"{api_url}/v2/", timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return type(exc).__name__
    if response.status_code >= 500:
        return f"GET /v2/ answered {response.status_code}"
    return "ok"
