"""Writing retention policies: an organization's default and a cluster's override, validated
before anything is written, with one audit row a write (as quotas are written)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from clusters.interface import Cluster, Organization, audit_record, changes
from registries.models import Registry
from registries.retention import POLICY_FIELDS, RetentionPolicy, policy_values, protected_default

#: The audit log's types: a policy written, or deleted.
RETENTION_POLICY_UPDATED = "REGISTRY_RETENTION_POLICY_UPDATED"
ORGANIZATION_RETENTION_POLICY_UPDATED = "ORGANIZATION_REGISTRY_RETENTION_POLICY_UPDATED"


#: Bounds of the rules: a count fits its column; days and hours stay within what a date can
#: be moved by (a century).
COUNT_MAX, DAYS_MAX, HOURS_MAX = 2**31 - 1, 36_500, 876_000
PATTERNS_MAX, PATTERN_LENGTH_MAX = 50, 128
_COUNTS = {"keep_newest": COUNT_MAX, "delete_older_than_days": DAYS_MAX}
_COUNTS["unless_pulled_within_days"] = DAYS_MAX


def _whole(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def retention_policy_validate(
    *, organization: Organization, cluster: Cluster | None, values: dict[str, Any]
) -> dict[str, Any]:
    """The checks of ``retention_policy_set``, alone (the console's form and the dry run's
    policy run them): every rule (a missing one takes its default), or ``ValidationError`` by
    field. Nothing is written either way."""
    errors: dict[str, str] = {}
    for name in sorted(set(values) - set(POLICY_FIELDS)):
        errors[name] = f"Unknown field; the fields are {', '.join(POLICY_FIELDS)}."
    rules: dict[str, Any] = {
        "enabled": values.get("enabled", True),
        "delete_untagged": values.get("delete_untagged", False),
        "protected_tags": values.get("protected_tags", protected_default()),
        "recent_hours": values.get("recent_hours", 24),
    }
    for name in ("enabled", "delete_untagged"):
        if not isinstance(rules[name], bool):
            errors[name] = "Must be true or false."
    for name, high in _COUNTS.items():
        rules[name] = values.get(name)
        if rules[name] is not None and not _whole(rules[name], 0, high):
            errors[name] = f"Must be a whole number from 0 to {high}, or null for no such rule."
    if not _whole(rules["recent_hours"], 0, HOURS_MAX):
        errors["recent_hours"] = f"Must be a whole number from 0 to {HOURS_MAX}."
    patterns = rules["protected_tags"]
    if not isinstance(patterns, list) or len(patterns) > PATTERNS_MAX:
        errors["protected_tags"] = f"Must be a list of at most {PATTERNS_MAX} patterns."
    elif not all(isinstance(p, str) and 0 < len(p.strip()) <= PATTERN_LENGTH_MAX for p in patterns):
        errors["protected_tags"] = (
            f"Each pattern must be a non-empty text of at most {PATTERN_LENGTH_MAX} characters "
            "(a glob: *, ?, [...])."
        )
    if rules["unless_pulled_within_days"] is not None and rules["delete_older_than_days"] is None:
        errors.setdefault(
            "unless_pulled_within_days", "Only applies with delete_older_than_days; set it too."
        )
    if cluster is not None and cluster.organization_id != organization.pk:
        errors.setdefault("cluster", "The cluster is not the organization's.")
    if errors:
        raise ValidationError(errors)
    return rules


def retention_policy_set(
    *, organization: Organization, cluster: Cluster | None = None, values: dict[str, Any]
) -> RetentionPolicy:
    """Set the organization's default policy (no ``cluster``) or the cluster's override to
    ``values`` (a rule left out takes its default), with one audit row of what changed.
    Raises ``ValidationError`` (nothing written) for a bad value or another organization's
    cluster."""
    rules = retention_policy_validate(organization=organization, cluster=cluster, values=values)
    with transaction.atomic():
        policy, before = _policy_write(organization, cluster, rules)
        _audit(organization, cluster, changes(before, rules))
    return policy


def _policy_write(
    organization: Organization, cluster: Cluster | None, rules: dict[str, Any]
) -> tuple[RetentionPolicy, dict[str, Any]]:
    """Write the rules on the policy row, locked: updated if there is one, else inserted (a
    concurrent first write's insert fails on the unique constraint, and is retried once as an
    update, as ``quota_set`` does). Returns it and its rules before (none for a new row)."""
    policy = _policy_lock(organization, cluster)
    if policy is None:
        policy = RetentionPolicy(organization=organization, cluster=cluster, **rules)
        try:
            with transaction.atomic():
                policy.save(force_insert=True)
            return policy, {}
        except IntegrityError:
            policy = _policy_lock(organization, cluster)
            if policy is None:  # not the unique constraint (the cluster deleted meanwhile)
                raise
    before = policy_values(policy)
    for name, value in rules.items():
        setattr(policy, name, value)
    policy.updated_at = timezone.now()
    policy.save()
    return policy, before


def retention_policy_delete(*, organization: Organization, cluster: Cluster | None = None) -> bool:
    """Delete the organization's default policy or the cluster's override (the default then
    applies to the cluster; without one nothing is deleted). Returns whether there was one."""
    if cluster is not None and cluster.organization_id != organization.pk:
        raise ValidationError("The cluster is not the organization's.")
    with transaction.atomic():
        policy = _policy_lock(organization, cluster)
        if policy is None:
            return False
        before = policy_values(policy)
        policy.delete()
        _audit(organization, cluster, {**changes(before, dict.fromkeys(before)), "deleted": True})
    return True


def _policy_lock(organization: Organization, cluster: Cluster | None) -> RetentionPolicy | None:
    policies = RetentionPolicy.objects.select_for_update().filter(organization=organization)
    return policies.filter(cluster=cluster).first()


def _audit(organization: Organization, cluster: Cluster | None, data: dict[str, Any]) -> None:
    """One row a write: the organization's for its default, the cluster's registry's (named by
    the cluster before it has one) for an override, as quotas record theirs."""
    if cluster is None:
        subject = ("ORGANIZATION", organization.uuid, organization.slug)
        kind = ORGANIZATION_RETENTION_POLICY_UPDATED
    else:
        registry = Registry.objects.filter(cluster=cluster).values_list("pk", "namespace").first()
        subject = ("REGISTRY", *(registry or ("", cluster.name)))
        kind, data = RETENTION_POLICY_UPDATED, {**data, "cluster": str(cluster.pk)}
    audit_record(
        type=kind,
        organization=organization,
        subject_type=subject[0],
        subject_uuid=subject[1],
        subject_name=subject[2],
        data=data,
    )
