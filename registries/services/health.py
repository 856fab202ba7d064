"""Health: whether a registry's backend answers and trusts our tokens (``backend_check``, "verify
now" in the console), the health canary of a ready registry, and the registries app's readiness
checks for ``/readyz`` (controlplane/health.py). None of these changes a state."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import metrics
from registries import conditions
from registries.drivers import DriverError, RegistryUnavailable, get_driver
from registries.keys import key_store
from registries.locks import registry_lock
from registries.models import Registry, State

# The logger of the registry services before they became a package: log filters key on it.
logger = logging.getLogger("registries.services")


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
    detail = ""
    try:
        seen, ok = get_driver(registry.driver).canary(namespace=registry.namespace), True
    except DriverError as exc:
        # Tenants read ``seen`` (the API's canary and Ready); operators the detail too.
        seen, detail, ok = exc.public, exc.detail, False
    result = CanaryResult(ok=ok, latency=timedelta(seconds=time.monotonic() - started), seen=seen)
    outcome = "passed" if ok else "failed"
    metrics.CANARIES.labels(outcome).inc()
    metrics.CANARY_SECONDS.labels(outcome).observe(result.latency.total_seconds())
    with transaction.atomic():
        locked = registry_lock(registry_id)
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
                detail=detail,
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
            **({} if ok else {"error": detail}),
        },
    )
    return result


def _milliseconds(duration: timedelta) -> str:
    return f"{duration.total_seconds() * 1000:.0f} ms"


def readiness_signing_key() -> None:
    """``/readyz``: the token service can load its signing key (raises ``SigningKeyMissing``)."""
    key_store().load()


def readiness_registry() -> None:
    """``/readyz``: the registry answers ``GET /v2/`` (401 without a token, as expected) within
    ``HEALTH_CHECK_TIMEOUT_SECONDS``. Lighter than ``backend_check``, which also signs a token and
    asks twice: this runs on every probe."""
    response = requests.get(
        f"{settings.REGISTRY_URL}/v2/",
        timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS,
        allow_redirects=False,
    )
    if response.status_code >= 500:
        raise RegistryUnavailable(f"GET /v2/ answered {response.status_code}")
