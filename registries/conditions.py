"""Kubernetes-style conditions on a registry, as Crossplane's managed resources have them.

``Ready``: can the cluster's jobs use the registry now? True once it is provisioned, for as long as
its health canary passes. Its reason says where the registry is in its lifecycle, or why its
canary failed.

``Synced``: did the control plane's last attempt to make the world match the record succeed? True
after a successful attempt or repair; False when an attempt failed, a message could not be
enqueued, or the reconciler found the registry stalled (reason and message say which); Unknown
before anything was tried.

``QuotaExceeded``: does the registry hold its quota's soft limit or more (``SoftLimitExceeded``),
or its hard limit (``HardLimitExceeded``: no push is granted)? False (``WithinQuota``) otherwise;
absent until a quota has been judged (``registries.services.quotas``).

``Verified``: after the last garbage collection on the registry's backend, did the registry serve
every manifest and blob its tags need (``VerificationPassed``)? False (``ContentMissing``) when
something was missing, Unknown (``NotVerified``) when the registry could not be checked; absent
before its backend's first collection (``registries.services.verification``).

Each condition has ``type``, ``status`` ("True", "False" or "Unknown"), a CamelCase ``reason``, a
sentence of ``message`` and ``last_transition_time``, which moves only when ``status`` changes.
A failure's condition also keeps a ``detail`` for operators (hosts, what the registry or a library
said): the console shows it, the REST API never does (its ``message`` names the failure only).
Conditions are set on the in-memory registry by the services, which save them with the change
they describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from registries.models import Registry, State

READY = "Ready"
SYNCED = "Synced"
#: True while the registry holds at least its quota's soft limit (``services.quotas``).
QUOTA_EXCEEDED = "QuotaExceeded"
#: Whether the registry served every kept tag whole after its backend's last garbage collection.
VERIFIED = "Verified"
TYPES = (READY, SYNCED, QUOTA_EXCEEDED, VERIFIED)
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

#: The ``Ready`` reason, and the message when there is no error to report, for each state (a
#: failed deprovisioning has its own reason).
READY_BY_STATE: dict[str, tuple[str, str]] = {
    State.PENDING: (
        "Pending", "Provisioning is queued: a worker will create the registry shortly."
    ),
    State.PROVISIONING: ("Provisioning", "A worker is creating the registry."),
    State.READY: (
        "Provisioned", "The registry is ready; the cluster's hosted jobs receive its URL."
    ),
    State.FAILED: ("ProvisioningFailed", "Provisioning failed; retry it once the cause is fixed."),
    State.DEPROVISIONING: (
        "Deprovisioning", "The registry is being deleted: it grants nothing any more."
    ),
    State.DELETED: ("Deprovisioned", "The registry was deleted."),
}  # fmt: skip
DEPROVISIONING_FAILED = "DeprovisioningFailed"
CANARY_FAILED = "CanaryFailed"
CANARY_PASSED = "CanaryPassed"
NOT_PUBLISHED = "UrlNotPublished"

# Synced reasons.
RECONCILE_SUCCESS = "ReconcileSuccess"
RECONCILE_ERROR = "ReconcileError"
ENQUEUE_FAILED = "EnqueueFailed"
STALLED = "Stalled"
# Unknown: asked for, not tried yet.
CREATED = "Created"
RETRY_REQUESTED = "RetryRequested"
DEPROVISION_REQUESTED = "DeprovisionRequested"
# QuotaExceeded reasons.
WITHIN_QUOTA = "WithinQuota"
SOFT_LIMIT_EXCEEDED = "SoftLimitExceeded"
HARD_LIMIT_EXCEEDED = "HardLimitExceeded"
# Verified reasons.
VERIFICATION_PASSED = "VerificationPassed"
CONTENT_MISSING = "ContentMissing"
NOT_VERIFIED = "NotVerified"


def condition_set(
    registry: Registry,
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: datetime | None = None,
    detail: str = "",
) -> bool:
    """Set one condition on ``registry`` (not saved). Returns whether anything changed.

    ``detail``: what operators see besides ``message`` (kept only when there is one)."""
    conditions = [dict(c) for c in registry.conditions or [] if c.get("type") in TYPES]
    current = next((c for c in conditions if c["type"] == type_), None)
    moved = current is None or current.get("status") != status
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "last_transition_time": (now or timezone.now()).isoformat()
        if moved
        else current["last_transition_time"],  # type: ignore[index]
    }
    if detail and detail != message:
        new["detail"] = detail
    if new == current:
        return False
    conditions = [c for c in conditions if c["type"] != type_] + [new]
    registry.conditions = sorted(conditions, key=lambda c: TYPES.index(c["type"]))
    return True


def condition_get(registry: Registry, type_: str) -> dict[str, Any] | None:
    """The condition of ``type_`` with ``last_transition_time`` as a datetime, or None."""
    for condition in registry.conditions or []:
        if condition.get("type") == type_:
            return {
                **condition,
                "last_transition_time": parse_datetime(condition["last_transition_time"]),
            }
    return None


def error_detail(registry: Registry) -> str:
    """The operators' account of the registry's last failure: the ``detail`` of ``Synced`` or of
    ``Ready`` (the canary), else ``last_error``, which names the failure for tenants."""
    for type_ in (SYNCED, READY):
        condition = condition_get(registry, type_)
        if condition is not None and condition.get("detail"):
            return str(condition["detail"])
    return registry.last_error


def ready_from_state(registry: Registry, *, now: datetime | None = None) -> bool:
    """Set ``Ready`` from the registry's state (after a transition)."""
    failed_deprovisioning = (
        registry.state == State.FAILED and registry.deprovision_requested_at is not None
    )
    reason, sentence = READY_BY_STATE[registry.state]
    return condition_set(
        registry,
        READY,
        TRUE if registry.state == State.READY else FALSE,
        DEPROVISIONING_FAILED if failed_deprovisioning else reason,
        registry.last_error or sentence,
        now=now,
    )


@dataclass(frozen=True)
class SyncedCondition:
    """What a transition says on ``Synced`` (``services.lifecycle.transition`` sets it with the
    state). ``at`` is when, if not the moment it is set."""

    status: str
    reason: str
    message: str
    at: datetime | None = None
    #: The operators' detail of a failure (``condition_set``).
    detail: str = ""

    @classmethod
    def true(cls, message: str) -> SyncedCondition:
        """The attempt did what it set out to do."""
        return cls(TRUE, RECONCILE_SUCCESS, message)

    @classmethod
    def false(
        cls, reason: str, message: str, *, at: datetime | None = None, detail: str = ""
    ) -> SyncedCondition:
        """It did not, and why (``detail``: the operators' account)."""
        return cls(FALSE, reason, message, at, detail)

    @classmethod
    def unknown(cls, reason: str, message: str, *, at: datetime | None = None) -> SyncedCondition:
        """Something was asked for and nothing has been tried yet."""
        return cls(UNKNOWN, reason, message, at)

    def set_on(self, registry: Registry) -> bool:
        """Set it on ``registry`` (not saved). Returns whether anything changed."""
        return condition_set(
            registry,
            SYNCED,
            self.status,
            self.reason,
            self.message,
            now=self.at,
            detail=self.detail,
        )
