"""Retention policies (docs/retention.md#retention-policies): writing them, planning what a
registry's policy deletes, and applying the plan.

The plan is computed from the inventory (``registries.inventory``) alone, so the dry run asks
nothing of the registry and lists exactly what a run would delete: a run is the plan applied.
A rule selects a tag (beyond the newest ``keep_newest`` of its repository; pushed more than
``delete_older_than_days`` ago and not pulled within ``unless_pulled_within_days``); a
protection keeps it (a ``protected_tags`` pattern; a push or pull within ``recent_hours``, so a
running pipeline keeps its base image). Distribution deletes by manifest digest, taking every
tag on it, so deletion is by group: a group is deleted only when every tag on the digest is
selected and unprotected, and a manifest that a kept index lists as a member is kept too.

Each group is deleted through ``tag_delete`` (the registry by digest, then the inventory, and
its audit row), after checking that the registry's events are all applied, that none of its
tags was pushed or pulled since the plan, and (``expected_digest``) that the registry's own tags
still match the plan. One registry runs one policy at a time (``retention.running``, checked
under the registry's row lock), each run bounded by ``REGISTRY_RETENTION_TIME_LIMIT_SECONDS``.
"""

from registries.services.retention.plan import (
    FROM_REQUEST,
    KeptTag,
    PlannedDeletion,
    RetentionPlan,
    TagSeen,
    retention_plan,
)
from registries.services.retention.policies import (
    ORGANIZATION_RETENTION_POLICY_UPDATED,
    RETENTION_POLICY_UPDATED,
    retention_policy_delete,
    retention_policy_set,
    retention_policy_validate,
)
from registries.services.retention.runs import (
    RETENTION_RUN_FINISHED,
    RetentionRunning,
    retention_apply,
    retention_sweep,
)

__all__ = [
    "FROM_REQUEST",
    "ORGANIZATION_RETENTION_POLICY_UPDATED",
    "RETENTION_POLICY_UPDATED",
    "RETENTION_RUN_FINISHED",
    "KeptTag",
    "PlannedDeletion",
    "RetentionPlan",
    "RetentionRunning",
    "TagSeen",
    "retention_apply",
    "retention_plan",
    "retention_policy_delete",
    "retention_policy_set",
    "retention_policy_validate",
    "retention_sweep",
]
