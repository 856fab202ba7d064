"""The plan of a retention policy: what it deletes from a registry and what it keeps, and why,
computed from the inventory alone (the dry run; a run applies it)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from itertools import groupby
from typing import Any

from django.utils import timezone

from controlplane import humanize
from registries.inventory import Manifest, Tag
from registries.models import Registry
from registries.retention import policy_for, policy_values

#: Where a dry run's policy came from when the request brought its own.
FROM_REQUEST = "request"


@dataclass(frozen=True)
class TagSeen:
    """A tag as the plan saw it: what the run compares with right before deleting."""

    name: str
    digest: str
    pushed_at: datetime
    last_pulled_at: datetime | None
    bytes: int


@dataclass(frozen=True)
class PlannedDeletion:
    """A manifest to delete (by digest) with every tag on it, and why."""

    repository: str  # relative to the namespace
    digest: str
    tags: list[str]
    reason: str
    bytes: int
    seen: tuple[TagSeen, ...] = field(repr=False, default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tags": self.tags,
            "digest": self.digest,
            "reason": self.reason,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class KeptTag:
    """A tag a rule selected and a protection kept, and which."""

    repository: str
    tag: str
    digest: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "tag": self.tag, "digest": self.digest,
                "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class RetentionPlan:
    """What the policy (``None``: none applies) deletes from a registry, and what it keeps."""

    policy: dict[str, Any] | None
    source: str | None
    deletions: list[PlannedDeletion] = field(default_factory=list)
    kept: list[KeptTag] = field(default_factory=list)


def _ago(delta: timedelta) -> str:
    return humanize.duration(timedelta(seconds=round(delta.total_seconds())))


@dataclass(frozen=True)
class _Rules:
    policy: dict[str, Any]
    now: datetime

    def selects(self, index: int, tag: TagSeen, repository: str) -> str | None:
        """Why a rule selects the ``index``-th newest tag of ``repository``; None if none."""
        keep, days = self.policy["keep_newest"], self.policy["delete_older_than_days"]
        if keep is not None and index >= keep:
            return f"beyond the newest {keep} tag{'' if keep == 1 else 's'} of {repository}"
        if days is None or tag.pushed_at > self.now - timedelta(days=days):
            return None
        age = (self.now - tag.pushed_at).days
        pulled_days = self.policy["unless_pulled_within_days"]
        if pulled_days is None:
            return f"pushed {age} days ago (more than {days})"
        since = self.now - timedelta(days=pulled_days)
        if tag.last_pulled_at is not None and tag.last_pulled_at > since:
            return None
        return f"pushed {age} days ago, not pulled in the last {pulled_days} days"

    def protects(self, tag: TagSeen) -> str | None:
        """Which protection keeps ``tag``; None if none."""
        for pattern in self.policy["protected_tags"]:
            if fnmatchcase(tag.name, pattern):
                return f"protected by the pattern {pattern!r}"
        hours = self.policy["recent_hours"]
        recent = self.now - timedelta(hours=hours)
        for verb, at in (("pushed", tag.pushed_at), ("pulled", tag.last_pulled_at)):
            if at is not None and at > recent:
                return f"{verb} {_ago(self.now - at)} ago, within the last {hours} hours"
        return None


def _tags_by_repository(registry: Registry) -> Iterator[tuple[str, list[TagSeen]]]:
    """The registry's tags by repository (relative name), newest first; ties by name."""
    rows = (
        Tag.objects.filter(repository__registry=registry)
        .order_by("repository__name", "-pushed_at", "name")
        .values_list("repository__name", "name", "digest", "pushed_at", "last_pulled_at", "bytes")
    )
    prefix = f"{registry.namespace}/"
    for name, group in groupby(rows.iterator(chunk_size=2000), key=lambda row: row[0]):
        yield name.removeprefix(prefix), [TagSeen(*row[1:]) for row in group]


def _members(registry: Registry, digests: set[str]) -> Iterator[tuple[str, list[str]]]:
    """Each of ``digests`` that is a manifest listing others (an index), and what it lists."""
    wanted = sorted(digests)
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        manifests = Manifest.objects.filter(registry=registry, digest__in=chunk)
        for digest, blobs in manifests.exclude(blobs={}).values_list("digest", "blobs"):
            yield digest, list(blobs)


def retention_plan(
    registry: Registry, *, policy: dict[str, Any] | None = None, now: datetime | None = None
) -> RetentionPlan:
    """What ``policy`` (the registry's own when None, as ``policy_for`` finds it) deletes from
    ``registry`` at ``now``, from the inventory: the dry run, and what a run applies. A
    disabled policy deletes nothing (its selections are listed as kept)."""
    now = now or timezone.now()
    source: str | None = FROM_REQUEST
    if policy is None:
        row, source = policy_for(registry.cluster_id)
        if row is None:
            return RetentionPlan(None, None)
        policy = policy_values(row)
    rules = _Rules(policy, now)
    kept: list[KeptTag] = []
    selected: dict[tuple[str, str], str] = {}  # (repository, tag) -> why
    groups: dict[tuple[str, str], list[TagSeen]] = defaultdict(list)  # (repository, digest)
    for repository, tags in _tags_by_repository(registry):
        for index, tag in enumerate(tags):
            groups[repository, tag.digest].append(tag)
            reason = rules.selects(index, tag, repository)
            protection = rules.protects(tag) if reason else None
            if reason and not policy["enabled"]:
                protection = "the policy is disabled"
            if protection:
                kept.append(KeptTag(repository, tag.name, tag.digest, protection))
            elif reason:
                selected[repository, tag.name] = reason
    why_kept = {}
    for key, tags in groups.items():
        keepers = [t.name for t in tags if (key[0], t.name) not in selected]
        if keepers:
            why_kept[key] = f"shares its manifest with {', '.join(keepers)}, which is kept"
    _keep_index_members(registry, groups, why_kept)
    deletions = []
    for (repository, digest), tags in sorted(groups.items()):
        reasons = [selected.get((repository, t.name)) for t in tags]
        if (repository, digest) in why_kept:
            for tag, reason in zip(tags, reasons, strict=True):
                if reason:
                    kept.append(KeptTag(repository, tag.name, digest, why_kept[repository, digest]))
            continue
        deletions.append(
            PlannedDeletion(
                repository, digest, sorted(t.name for t in tags),
                "; ".join(sorted({r for r in reasons if r})), max(t.bytes for t in tags),
                tuple(tags),
            )
        )  # fmt: skip
    kept.sort(key=lambda k: (k.repository, k.tag))
    return RetentionPlan(policy, source, deletions, kept)


def _keep_index_members(
    registry: Registry,
    groups: dict[tuple[str, str], list[TagSeen]],
    why_kept: dict[tuple[str, str], str],
) -> None:
    """Keep every manifest a kept index of the same repository lists (deleting a member by
    digest would break the index), and the members of those in turn."""
    checked: set[tuple[str, str]] = set()
    while True:
        # Only a repository with a group still to delete can lose one to an index: the others'
        # manifests are not read at all.
        open_repositories = {repository for repository, _ in set(groups) - set(why_kept)}
        fresh = {key for key in set(why_kept) - checked if key[0] in open_repositories}
        if not fresh:
            return
        checked |= fresh
        repositories = defaultdict(list)
        for repository, digest in fresh:
            repositories[digest].append(repository)
        for index, members in _members(registry, {digest for _, digest in fresh}):
            for repository in repositories[index]:
                names = ", ".join(t.name for t in groups[repository, index])
                for member in members:
                    if (repository, member) in groups and (repository, member) not in why_kept:
                        why_kept[repository, member] = (
                            f"a member of the index {names} ({index[:19]}…), which is kept"
                        )
