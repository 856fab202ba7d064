"""How much a registry may hold: the quota rows, the quota that applies to a registry, and how
its usage stands against it (docs/quotas.md).

A quota is a row of ``RegistryQuota``: an organization's default (``cluster`` null) or a
cluster's override. The quota of a registry is its cluster's override, else its organization's
default, else the setting ``REGISTRY_QUOTA_DEFAULT_BYTES`` (unset: no limit), whole: an override
replaces the default, it does not merge with it. Byte limits count unique blobs
(``Registry.usage_bytes``); the tag limit counts tags (``Registry.usage_tags``).

The writes (``registries.services.quotas``) judge the usage and keep on the registry row what
the token endpoint needs; this module only reads. The models refer to the clusters app's by
name, so that ``registries.models`` imports this module and not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from clusters.interface import Cluster
from controlplane import humanize

#: The soft limit, when a quota sets none: this share of the hard limit.
SOFT_DEFAULT_PERCENT = 80

# What a registry's usage is against its quota (``QuotaStatus.state``).
UNLIMITED = "unlimited"
WITHIN = "within"
SOFT_EXCEEDED = "soft_exceeded"
HARD_EXCEEDED = "hard_exceeded"
STATES = (UNLIMITED, WITHIN, SOFT_EXCEEDED, HARD_EXCEEDED)

# Where the quota of a registry comes from (``QuotaStatus.source``).
FROM_CLUSTER, FROM_ORGANIZATION, FROM_SETTING = "cluster", "organization", "setting"


class RegistryQuota(models.Model):
    """A limit on what registries may hold: an organization's default for its clusters'
    registries (``cluster`` null: one per organization), or one cluster's override (one per
    cluster). ``hard_bytes``: at or over it, the token endpoint grants no push. ``soft_bytes``:
    at or over it, the registry's ``QuotaExceeded`` condition turns True; null means
    ``SOFT_DEFAULT_PERCENT`` of ``hard_bytes``. ``hard_tags``: at or over it, no push either.
    A null limit is no limit."""

    organization = models.ForeignKey(
        "clusters.Organization", on_delete=models.CASCADE, related_name="registry_quotas"
    )
    cluster = models.OneToOneField(
        "clusters.Cluster",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="registry_quota",
    )
    hard_bytes = models.BigIntegerField(null=True, blank=True)
    soft_bytes = models.BigIntegerField(null=True, blank=True)
    hard_tags = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization"],
                condition=Q(cluster__isnull=True),
                name="registry_quota_one_default",
            ),
            models.CheckConstraint(
                condition=(Q(hard_bytes__isnull=True) | Q(hard_bytes__gte=0))
                & (Q(soft_bytes__isnull=True) | Q(soft_bytes__gte=0))
                & (Q(hard_tags__isnull=True) | Q(hard_tags__gte=0)),
                name="registry_quota_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(soft_bytes__isnull=True)
                | Q(hard_bytes__isnull=True)
                | Q(soft_bytes__lte=models.F("hard_bytes")),
                name="registry_quota_soft_under_hard",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cluster or self.organization}: {human_bytes(self.hard_bytes)}"

    @property
    def limits(self) -> QuotaLimits:
        return QuotaLimits(self.hard_bytes, self.soft_bytes, self.hard_tags)


@dataclass(frozen=True)
class QuotaLimits:
    """A quota's limits (None: no limit); ``soft`` is the soft limit in force."""

    hard_bytes: int | None = None
    soft_bytes_set: int | None = None
    hard_tags: int | None = None

    @property
    def soft_bytes(self) -> int | None:
        if self.soft_bytes_set is not None or self.hard_bytes is None:
            return self.soft_bytes_set
        return self.hard_bytes * SOFT_DEFAULT_PERCENT // 100

    @property
    def unlimited(self) -> bool:
        return self.hard_bytes is None and self.soft_bytes is None and self.hard_tags is None


@dataclass(frozen=True)
class QuotaStatus:
    """A registry's usage against the quota that applies to it."""

    limits: QuotaLimits
    #: ``FROM_CLUSTER``, ``FROM_ORGANIZATION``, ``FROM_SETTING``, or None (no quota).
    source: str | None
    used_bytes: int
    used_tags: int
    #: One of ``STATES``.
    state: str
    #: What the token endpoint tells a client refused a push; "" while pushes are allowed.
    push_refused: str
    #: A sentence for people (the condition's message).
    message: str

    @property
    def percent(self) -> float | None:
        """Used bytes as a percentage of the hard limit (of the soft one without a hard one)."""
        limit = self.limits.hard_bytes
        limit = self.limits.soft_bytes if limit is None else limit
        if limit is None:
            return None
        return round(100.0 * self.used_bytes / limit, 1) if limit else 100.0


def human_bytes(size: int | None, digits: int = 1) -> str:
    """Decimal units, as disks are sold and as the quota message shows them: ``10.2 GB``,
    ``10 GB``, ``512 B``, with at most ``digits`` decimals ("no limit" for None)."""
    return "no limit" if size is None else humanize.size(size, digits)


def sizes_apart(used: int, limit: int) -> tuple[str, str]:
    """``used`` and ``limit`` in human units, with as many decimals (up to three) as it takes
    to tell them apart, else in bytes: "1 MB of 1 MB used" would say nothing."""
    for digits in (1, 2, 3):
        shown = human_bytes(used, digits), human_bytes(limit, digits)
        if shown[0] != shown[1] or used == limit:
            return shown
    return f"{used} B", f"{limit} B"


def refusal(*, used: str, limit: str) -> str:
    """What a client refused a push is told (the issue's wording)."""
    return f"quota exceeded: {used} of {limit} used; delete tags or raise the quota"


def judge(limits: QuotaLimits, source: str | None, used_bytes: int, used_tags: int) -> QuotaStatus:
    """How ``used_bytes`` and ``used_tags`` stand against ``limits`` (at a limit counts as
    over it: a push at the hard limit would go past it)."""
    refused = ""
    if limits.hard_bytes is not None and used_bytes >= limits.hard_bytes:
        used, limit = sizes_apart(used_bytes, limits.hard_bytes)
        refused = refusal(used=used, limit=limit)
    elif limits.hard_tags is not None and used_tags >= limits.hard_tags:
        tags = "tag" if used_tags == 1 else "tags"
        refused = refusal(used=f"{used_tags} {tags}", limit=f"{limits.hard_tags}")
    soft = limits.soft_bytes
    if limits.unlimited:
        state, message = UNLIMITED, "No quota applies to this registry."
    elif refused:
        state, message = HARD_EXCEEDED, f"Pushes are refused: {refused}."
    elif soft is not None and used_bytes >= soft:
        state = SOFT_EXCEEDED
        message = (
            f"{human_bytes(used_bytes)} used, over the soft limit of {human_bytes(soft)} "
            f"(hard limit: {human_bytes(limits.hard_bytes)})."
        )
    else:
        state = WITHIN
        message = f"{human_bytes(used_bytes)} used of {human_bytes(limits.hard_bytes)}."
    return QuotaStatus(limits, source, used_bytes, used_tags, state, refused, message)


def setting_limits() -> QuotaLimits | None:
    default = settings.REGISTRY_QUOTA_DEFAULT_BYTES
    return None if default is None else QuotaLimits(hard_bytes=int(default))


def quota_for(cluster_id: Any) -> tuple[QuotaLimits, str | None]:
    """The quota of the cluster's registry and where it comes from: one query (none without a
    cluster, for a registry whose cluster was deleted: no limit)."""
    if cluster_id is None:
        return QuotaLimits(), None
    rows = RegistryQuota.objects.filter(
        Q(cluster_id=cluster_id) | Q(cluster__isnull=True, organization__clusters__id=cluster_id)
    ).values_list("cluster_id", "hard_bytes", "soft_bytes", "hard_tags")
    found = {cluster is not None: QuotaLimits(*limits) for cluster, *limits in rows}
    if True in found:
        return found[True], FROM_CLUSTER
    if False in found:
        return found[False], FROM_ORGANIZATION
    default = setting_limits()
    return (QuotaLimits(), None) if default is None else (default, FROM_SETTING)


def quota_status(registry: Any) -> QuotaStatus:
    """The registry's usage against its quota, as the API shows it (one query)."""
    limits, source = quota_for(registry.cluster_id)
    return judge(limits, source, registry.usage_bytes, registry.usage_tags)


def organization_quota(organization: Any) -> tuple[QuotaLimits, str | None]:
    """The organization's default quota (else the setting's) and where it comes from."""
    row = (
        RegistryQuota.objects.filter(organization=organization, cluster__isnull=True)
        .values_list("hard_bytes", "soft_bytes", "hard_tags")
        .first()
    )
    if row is not None:
        return QuotaLimits(*row), FROM_ORGANIZATION
    default = setting_limits()
    return (QuotaLimits(), None) if default is None else (default, FROM_SETTING)


def organization_quota_states(
    organization: Any, limits: QuotaLimits, source: str | None
) -> dict[str, int]:
    """How many registries the organization's default (``limits``, from ``organization_quota``)
    applies to, its clusters' without an override, are in each state against it: one query."""
    counts = dict.fromkeys(STATES, 0)
    usage = (
        Cluster.objects.filter(
            organization_id=organization.pk, registry_quota__isnull=True, registry__isnull=False
        )
        .order_by()
        .values_list("registry__usage_bytes", "registry__usage_tags")
    )
    for used_bytes, used_tags in usage:
        counts[judge(limits, source, used_bytes, used_tags).state] += 1
    return counts
