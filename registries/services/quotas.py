"""Quotas: how much a registry may hold, and what happens when it holds more (docs/quotas.md).

``quota_evaluate`` judges a registry's usage against its quota (``registries.quotas``) with the
registry row locked: ``usage_refresh`` calls it after every new figure, and every quota write
calls it for each registry the write applies to. It keeps the registry's ``QuotaExceeded``
condition and ``push_refused`` (what the token endpoint reads, in its one query), and writes an
audit row from the system and counts a metric only when the state moves (within, over the soft
limit, at the hard limit), not on every refresh.

The writes (``quota_set``, ``quota_delete``) validate everything before they write anything
(``quota_validate``: the console's form runs the same), and write one audit row in their
transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from clusters.interface import (
    Actor,
    ActorType,
    Cluster,
    Organization,
    acting_as,
    audit_record,
    changes,
)
from controlplane import hotcache, metrics
from controlplane.celery import app as celery_app
from registries import conditions
from registries.locks import registries_lock_of_clusters
from registries.models import Registry
from registries.quotas import (
    HARD_EXCEEDED,
    SOFT_EXCEEDED,
    UNLIMITED,
    WITHIN,
    QuotaStatus,
    RegistryQuota,
    judge,
    quota_for,
)
from registries.retention import RETENTION_RUN_TASK, RetentionTrigger, policy_for
from registries.retention import running as retention_running
from registries.services.audit import registry_audit

logger = logging.getLogger("registries.services")

#: The audit log's types: a quota written (or deleted), and a registry crossing a limit.
QUOTA_UPDATED = "REGISTRY_QUOTA_UPDATED"
ORGANIZATION_QUOTA_UPDATED = "ORGANIZATION_REGISTRY_QUOTA_UPDATED"
SOFT_LIMIT_EXCEEDED = "REGISTRY_QUOTA_SOFT_LIMIT_EXCEEDED"
HARD_LIMIT_EXCEEDED = "REGISTRY_QUOTA_HARD_LIMIT_EXCEEDED"
WITHIN_LIMITS = "REGISTRY_QUOTA_WITHIN_LIMITS"

LIMIT_FIELDS = ("hard_bytes", "soft_bytes", "hard_tags")
#: The largest figure a limit may be (a 64-bit signed column).
LIMIT_MAX = 2**63 - 1

#: Each state's condition (status, reason) and the audit type of reaching it.
_STATES: dict[str, tuple[str, str, str]] = {
    UNLIMITED: (conditions.FALSE, conditions.WITHIN_QUOTA, WITHIN_LIMITS),
    WITHIN: (conditions.FALSE, conditions.WITHIN_QUOTA, WITHIN_LIMITS),
    SOFT_EXCEEDED: (conditions.TRUE, conditions.SOFT_LIMIT_EXCEEDED, SOFT_LIMIT_EXCEEDED),
    HARD_EXCEEDED: (conditions.TRUE, conditions.HARD_LIMIT_EXCEEDED, HARD_LIMIT_EXCEEDED),
}
_SYSTEM = Actor(ActorType.SYSTEM, "", "system")


def quota_evaluate(registry: Registry) -> QuotaStatus:
    """Judge the registry's usage (its ``usage_bytes`` and ``usage_tags`` as given) against its
    quota, with its row locked by the caller; record what changed (one query to read the quota,
    one ``UPDATE`` when the condition or the refusal moved, nothing else unless the state did).
    """
    limits, source = quota_for(registry.cluster_id)
    status = judge(limits, source, registry.usage_bytes, registry.usage_tags)
    previous = conditions.condition_get(registry, conditions.QUOTA_EXCEEDED)
    if previous is None and status.state == UNLIMITED and not registry.push_refused:
        return status  # never judged against a quota, and none applies: nothing to record
    condition_status, reason, event = _STATES[status.state]
    moved = conditions.condition_set(
        registry, conditions.QUOTA_EXCEEDED, condition_status, reason, status.message
    )
    refusal_moved = registry.push_refused != status.push_refused
    if not (moved or refusal_moved):
        return status
    registry.push_refused = status.push_refused
    Registry.objects.filter(pk=registry.pk).update(
        conditions=registry.conditions, push_refused=registry.push_refused
    )
    if refusal_moved and registry.cluster_id is not None:
        # The token endpoint's cached principal carries the refusal: this process drops it now
        # (and again at commit), the others within HOT_CACHE_SECONDS.
        hotcache.invalidate(hotcache.row_tag(Cluster, registry.cluster_id))
    before = conditions.WITHIN_QUOTA if previous is None else previous.get("reason")
    if reason != before:
        _crossed(registry, status, event)
    return status


def _crossed(registry: Registry, status: QuotaStatus, event: str) -> None:
    """The registry's state against its quota moved: one audit row from the system, a metric
    (once committed), and the retention policies' turn."""
    with acting_as(_SYSTEM):
        registry_audit(
            registry,
            event,
            {
                "state": status.state,
                "used_bytes": status.used_bytes,
                "used_tags": status.used_tags,
                "hard_bytes": status.limits.hard_bytes,
                "soft_bytes": status.limits.soft_bytes,
                "hard_tags": status.limits.hard_tags,
                "source": status.source,
            },
        )
    counter = metrics.QUOTA_TRANSITIONS.labels(status.state)
    transaction.on_commit(counter.inc)
    if status.state in (SOFT_EXCEEDED, HARD_EXCEEDED):
        retention_policies_on_limit(registry, status)


def retention_policies_on_limit(registry: Registry, status: QuotaStatus) -> None:
    """Called, in the transaction and with the registry row locked, when a registry enters its
    soft or its hard limit: its retention policy, if one applies and is enabled, runs once the
    transaction commits (``registries.retention_run``, trigger ``soft_limit`` or
    ``hard_limit``). Not while a run is under way: its own deletions move the registry from the
    hard limit to the soft one, and a second run would find nothing the first did not."""
    policy, _ = policy_for(registry.cluster_id)
    if policy is None or not policy.enabled or retention_running(registry.pk) is not None:
        return
    hard = status.state == HARD_EXCEEDED
    trigger = RetentionTrigger.HARD_LIMIT if hard else RetentionTrigger.SOFT_LIMIT
    retention_run_enqueue(str(registry.pk), trigger)


def retention_run_enqueue(registry_id: str, trigger: str) -> None:
    """Ask a worker to apply the registry's retention policy once the transaction commits
    (here rather than in ``services.retention``, which imports it, so that the quota hook can
    enqueue by name without importing the layer above). A message the broker does not take is
    logged: the schedule runs the policy again within ``REGISTRY_RETENTION_INTERVAL_SECONDS``."""

    def send() -> None:
        try:
            celery_app.tasks[RETENTION_RUN_TASK].delay(registry_id, str(trigger))
        except Exception:
            logger.exception(
                "registry.retention.enqueue_failed",
                extra={"registry_id": registry_id, "trigger": str(trigger)},
            )

    transaction.on_commit(send)


def _limits(values: dict[str, Any]) -> dict[str, int | None]:
    """The limits of a write, checked: whole numbers from 0 (or null), soft under hard."""
    errors: dict[str, str] = {}
    limits: dict[str, int | None] = {}
    for name in LIMIT_FIELDS:
        value = values.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LIMIT_MAX
        ):
            errors[name] = f"Must be a whole number from 0 to {LIMIT_MAX}, or null for no limit."
        limits[name] = value
    unknown = sorted(set(values) - set(LIMIT_FIELDS))
    if unknown:
        errors[unknown[0]] = f"Unknown limit; the limits are {', '.join(LIMIT_FIELDS)}."
    soft, hard = limits["soft_bytes"], limits["hard_bytes"]
    if not errors and soft is not None and hard is not None and soft > hard:
        errors["soft_bytes"] = f"Must not exceed hard_bytes ({hard})."
    if errors:
        raise ValidationError(errors)
    return limits


def quota_set(
    *, organization: Organization, cluster: Cluster | None = None, **values: Any
) -> RegistryQuota:
    """Set the organization's default quota (no ``cluster``) or the cluster's override to
    ``hard_bytes``, ``soft_bytes`` and ``hard_tags`` (each None, or left out: no limit), and
    judge every registry it applies to again at once. Raises ``ValidationError`` (nothing
    written) for a bad limit or another organization's cluster."""
    limits = quota_validate(organization=organization, cluster=cluster, values=values)
    with transaction.atomic():
        quota, before = _quota_write(organization, cluster, limits)
        _audit(organization, cluster, changes(before, limits))
        _evaluate(organization, cluster)
    return quota


def quota_validate(
    *, organization: Organization, cluster: Cluster | None, values: dict[str, Any]
) -> dict[str, int | None]:
    """The checks of ``quota_set``, alone (the console's form runs them before saving): the
    limits as written, or ``ValidationError`` (by field for a bad limit)."""
    limits = _limits(values)
    if cluster is not None and cluster.organization_id != organization.pk:
        raise ValidationError("The cluster is not the organization's.")
    return limits


def _quota_write(
    organization: Organization, cluster: Cluster | None, limits: dict[str, int | None]
) -> tuple[RegistryQuota, dict[str, int | None]]:
    """Write the limits on the quota row, locked: updated if there is one, else inserted. Returns
    it and its limits before (none for a new row).

    With no row there is nothing to lock, so two first writes can both insert: the second's
    insert waits on the first's and, once that commits, fails on the unique constraint. It is
    then retried, once, as an update of the row the first wrote (in a savepoint, so the
    transaction goes on). Why not lock the organization or the cluster row first: the usage
    refresh holds a registry row and then inserts an audit row, which takes the organization
    row ``FOR KEY SHARE``; a default's write holding the organization ``FOR UPDATE`` and then
    waiting for that registry would deadlock with it."""
    quota = _quota_lock(organization, cluster)
    if quota is None:
        quota = RegistryQuota(organization=organization, cluster=cluster, **limits)
        quota.full_clean(exclude=["organization", "cluster"], validate_unique=False)
        try:
            with transaction.atomic():
                quota.save(force_insert=True)
            return quota, {}
        except IntegrityError:
            quota = _quota_lock(organization, cluster)
            if quota is None:  # not the unique constraint (the cluster deleted meanwhile)
                raise
    before = {name: getattr(quota, name) for name in LIMIT_FIELDS}
    for name, value in limits.items():
        setattr(quota, name, value)
    quota.updated_at = timezone.now()
    quota.full_clean(exclude=["organization", "cluster"], validate_unique=False)
    quota.save()
    return quota, before


def quota_delete(*, organization: Organization, cluster: Cluster | None = None) -> bool:
    """Delete the organization's default quota or the cluster's override (the next one down then
    applies), and judge the registries again. Returns whether there was one."""
    if cluster is not None and cluster.organization_id != organization.pk:
        raise ValidationError("The cluster is not the organization's.")
    with transaction.atomic():
        quota = _quota_lock(organization, cluster)
        if quota is None:
            return False
        before = {name: getattr(quota, name) for name in LIMIT_FIELDS}
        quota.delete()
        _audit(organization, cluster, {**changes(before, dict.fromkeys(before)), "deleted": True})
        _evaluate(organization, cluster)
    return True


def _quota_lock(organization: Organization, cluster: Cluster | None) -> RegistryQuota | None:
    quotas = RegistryQuota.objects.select_for_update().filter(organization=organization)
    return quotas.filter(cluster=cluster).first()


def _audit(organization: Organization, cluster: Cluster | None, data: dict[str, Any]) -> None:
    if cluster is None:
        audit_record(
            type=ORGANIZATION_QUOTA_UPDATED,
            organization=organization,
            subject_type="ORGANIZATION",
            subject_uuid=organization.uuid,
            subject_name=organization.slug,
            data=data,
        )
        return
    registry = Registry.objects.filter(cluster=cluster).values_list("pk", "namespace").first()
    audit_record(
        type=QUOTA_UPDATED,
        organization=organization,
        subject_type="REGISTRY",
        subject_uuid=registry[0] if registry else "",  # no registry before its first hosted queue
        subject_name=registry[1] if registry else cluster.name,
        data={**data, "cluster": str(cluster.pk)},
    )


def _evaluate(organization: Organization, cluster: Cluster | None) -> None:
    """Judge again the registries a quota write applies to: the cluster's, or those of the
    organization's clusters without an override of their own."""
    if cluster is not None:
        cluster_ids = [cluster.pk]
    else:
        cluster_ids = list(
            Cluster.objects.filter(organization=organization, registry_quota__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    for registry in registries_lock_of_clusters(cluster_ids):
        quota_evaluate(registry)
