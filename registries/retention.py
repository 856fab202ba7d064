"""Retention policies: which tags of a registry are deleted, and the record of each run
(docs/retention.md).

A policy is a row of ``RetentionPolicy``: an organization's default (``cluster`` null) or a
cluster's override, which replaces the default whole (as quotas do). A tag is deleted when a rule
selects it (beyond the newest ``keep_newest`` of its repository; older than
``delete_older_than_days`` and not pulled within ``unless_pulled_within_days``) and no
protection keeps it: a ``protected_tags`` pattern, a push or pull within ``recent_hours`` (a
running pipeline's base image), a kept tag on the same manifest, or a kept index that lists it.

The writes live in ``registries.services.retention``; this module holds the rows. The models
refer to the other apps' by name, so that ``registries.models`` imports this module and not the
other way round.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

#: The task that applies a registry's policy (``registries.tasks``), enqueued by name.
RETENTION_RUN_TASK = "registries.retention_run"
#: A policy's fields, as the API, the console, audit rows and a run's snapshot name them.
POLICY_FIELDS = (
    "enabled",
    "keep_newest",
    "delete_older_than_days",
    "unless_pulled_within_days",
    "delete_untagged",
    "protected_tags",
    "recent_hours",
)
# Where the policy of a registry comes from.
FROM_CLUSTER, FROM_ORGANIZATION = "cluster", "organization"

#: How long past a run's time limit a ``running`` run is still taken for under way (the task's
#: hard limit is 30 s past it).
RUN_STALE_MARGIN_SECONDS = 60

#: What a new policy protects unless told otherwise: the tags a pipeline or a person names.
PROTECTED_DEFAULT = ["latest", "v*", "release-*"]
#: A tag pushed or pulled within this many hours is never deleted, unless the policy says.
RECENT_HOURS_DEFAULT = 24


def protected_default() -> list[str]:
    return list(PROTECTED_DEFAULT)


class RetentionPolicy(models.Model):
    """What a registry keeps: an organization's default for its clusters' registries
    (``cluster`` null: one per organization), or one cluster's override (one per cluster).
    A null rule is off; a policy with every rule off deletes nothing."""

    organization = models.ForeignKey(
        "clusters.Organization", on_delete=models.CASCADE, related_name="retention_policies"
    )
    cluster = models.OneToOneField(
        "clusters.Cluster",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="retention_policy",
    )
    enabled = models.BooleanField(default=True)
    #: Keep the newest N tags of each repository (by push time); null: no such rule.
    keep_newest = models.PositiveIntegerField(null=True, blank=True)
    #: Delete tags pushed more than D days ago ...
    delete_older_than_days = models.PositiveIntegerField(null=True, blank=True)
    #: ... unless pulled within the last P days; null: however recently pulled.
    unless_pulled_within_days = models.PositiveIntegerField(null=True, blank=True)
    #: Let the garbage collection delete manifests no tag points to (where that is safe:
    #: docs/retention.md#untagged-manifests).
    delete_untagged = models.BooleanField(default=False)
    #: Glob patterns (``fnmatch``, case-sensitive) of tags never deleted.
    protected_tags = models.JSONField(default=protected_default, blank=True)
    #: CI-aware: a tag pushed or pulled within this many hours is never deleted.
    recent_hours = models.PositiveIntegerField(default=RECENT_HOURS_DEFAULT)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "retention policies"
        constraints = [
            models.UniqueConstraint(
                fields=["organization"],
                condition=Q(cluster__isnull=True),
                name="retention_policy_one_default",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}/{self.cluster_id or 'default'}"


class RetentionTrigger(models.TextChoices):
    SCHEDULE = "schedule", "schedule"
    SOFT_LIMIT = "soft_limit", "soft limit crossed"
    HARD_LIMIT = "hard_limit", "hard limit crossed"
    MANUAL = "manual", "on demand"


class RetentionRunState(models.TextChoices):
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


class RetentionRun(models.Model):
    """One application of a registry's policy (dry runs are answered, not recorded): what it
    deleted and why, and the registry's usage before and after."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    registry = models.ForeignKey(
        "registries.Registry", on_delete=models.CASCADE, related_name="retention_runs"
    )
    trigger = models.CharField(max_length=16, choices=RetentionTrigger.choices)
    state = models.CharField(
        max_length=16, choices=RetentionRunState.choices, default=RetentionRunState.RUNNING
    )
    #: The policy as applied (its fields), and where it came from ("cluster", "organization").
    policy = models.JSONField(default=dict, blank=True)
    #: ``[{"repository", "tags", "digest", "reason", "bytes"}]``: one entry a deleted manifest.
    deleted = models.JSONField(default=list, blank=True)
    #: Tags the policy selected but could not delete, with why (``[{"repository", "tag",
    #: "error"}]``).
    errors = models.JSONField(default=list, blank=True)
    usage_bytes_before = models.BigIntegerField(default=0)
    usage_bytes_after = models.BigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["registry", "-started_at"], name="retention_run_recent")]

    def __str__(self) -> str:
        return f"{self.registry_id} {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def freed_bytes(self) -> int | None:
        """What the registry's usage (unique blobs) dropped by; None until finished."""
        if self.usage_bytes_after is None:
            return None
        return self.usage_bytes_before - self.usage_bytes_after


def policy_values(policy: RetentionPolicy) -> dict[str, Any]:
    """The policy's rules (``POLICY_FIELDS``) as JSON values."""
    return {name: getattr(policy, name) for name in POLICY_FIELDS}


def policy_for(cluster_id: Any) -> tuple[RetentionPolicy | None, str | None]:
    """The policy of the cluster's registry and where it comes from, as ``quota_for`` finds a
    quota: the cluster's override, else its organization's default, else none (one query; none
    for a registry whose cluster was deleted). An override replaces the default whole."""
    if cluster_id is None:
        return None, None
    rows = RetentionPolicy.objects.filter(
        Q(cluster_id=cluster_id) | Q(cluster__isnull=True, organization__clusters__id=cluster_id)
    )
    return policy_in_force(list(rows), cluster_id=cluster_id)


def policies_for(
    clusters: Iterable[tuple[Any, Any]],
) -> dict[Any, tuple[RetentionPolicy | None, str | None]]:
    """``policy_for`` of many clusters at once (``(cluster_id, organization_id)`` pairs), in one
    query: by cluster id. For the checks that read a whole backend or a batch of registries."""
    pairs = dict(clusters)
    rows = list(
        RetentionPolicy.objects.filter(
            Q(cluster_id__in=list(pairs))
            | Q(cluster__isnull=True, organization_id__in=set(pairs.values()))
        )
    )
    return {
        cluster_id: policy_in_force(
            [
                r
                for r in rows
                if r.cluster_id in (cluster_id, None) and r.organization_id == organization_id
            ],
            cluster_id=cluster_id,
        )  # fmt: skip
        for cluster_id, organization_id in pairs.items()
    }


def policy_in_force(
    rows: list[RetentionPolicy], *, cluster_id: Any
) -> tuple[RetentionPolicy | None, str | None]:
    """The precedence itself, over the candidate rows of one cluster (its override, its
    organization's default): the override if there is one, else the default, else none."""
    override = [row for row in rows if row.cluster_id == cluster_id]
    if override:
        return override[0], FROM_CLUSTER
    default = [row for row in rows if row.cluster_id is None]
    if default:
        return default[0], FROM_ORGANIZATION
    return None, None


def time_limit() -> int:
    """How long a run may delete (``REGISTRY_RETENTION_TIME_LIMIT_SECONDS``): a worker's and a
    web request's run alike stop there."""
    return int(settings.REGISTRY_RETENTION_TIME_LIMIT_SECONDS)


def run_stale_before(now: datetime | None = None) -> datetime:
    """Runs still ``running`` that started before this are not under way: their worker or web
    request is gone. Past the task's hard limit (``REGISTRY_RETENTION_TIME_LIMIT_SECONDS`` + 30
    s) with a margin, so that a live run is never taken for a dead one."""
    limit = time_limit() + RUN_STALE_MARGIN_SECONDS
    return (now or timezone.now()) - timedelta(seconds=limit)


def running(registry_id: Any, *, now: datetime | None = None) -> RetentionRun | None:
    """The run of the registry's policy under way (its deletions move its usage), if any: one
    ``running`` and not stale (``run_stale_before``). The one check of "is a run under way",
    for the quota trigger and for a run's start (which also marks the stale ones failed)."""
    return (
        RetentionRun.objects.filter(
            registry_id=registry_id,
            state=RetentionRunState.RUNNING,
            started_at__gte=run_stale_before(now),
        )
        .order_by("started_at")
        .first()
    )
