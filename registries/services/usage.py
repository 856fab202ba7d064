"""The inventory and usage of a registry (``registries.inventory``): the writes the notification
path, the usage scan and tag deletion share, and the totals they all end with.

Every write here runs in a transaction that holds the registry's row lock
(``registries.locks.registry_lock``), taken by the caller through ``inventory_lock``: the events
of one registry, its scan and its tag deletions then apply one after another, and the totals
``usage_refresh`` computes are those of what is committed. Storage is counted in unique blobs per
namespace: a layer shared by two tags, or by two repositories, counts once; a manifest counts its
own size too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime

from django.db.models import F, Q
from django.utils import timezone

from registries.inventory import Manifest, Repository, Tag, UsageDay
from registries.locks import registry_lock
from registries.models import Registry
from registries.services.quotas import quota_evaluate

#: The ``UsageDay.repository`` of a whole registry's day.
WHOLE_REGISTRY = ""


def inventory_lock(registry_id: uuid.UUID | str) -> Registry | None:
    """Lock the registry row for an inventory write (inside ``transaction.atomic``)."""
    return registry_lock(registry_id)


def manifest_put(
    registry: Registry,
    *,
    digest: str,
    media_type: str,
    size: int,
    blobs: dict[str, int],
    complete: bool = True,
) -> Manifest:
    """Record a manifest and the blobs it references (a complete record replaces a partial one;
    a partial one never replaces a complete one)."""
    manifest, created = Manifest.objects.get_or_create(
        registry=registry,
        digest=digest,
        defaults={"media_type": media_type, "size": size, "blobs": blobs, "complete": complete},
    )
    if (
        not created
        and (complete or not manifest.complete)
        and (manifest.blobs != blobs or manifest.complete != complete or manifest.size != size)
    ):
        manifest.media_type, manifest.size = media_type or manifest.media_type, size
        manifest.blobs, manifest.complete = blobs, complete
        manifest.save(update_fields=["media_type", "size", "blobs", "complete"])
    return manifest


def repository_get(registry: Registry, name: str) -> Repository:
    repository, _ = Repository.objects.get_or_create(registry=registry, name=name)
    return repository


def tag_put(
    registry: Registry,
    *,
    repository: str,
    tag: str,
    digest: str,
    at: datetime,
    from_event: bool = True,
) -> Tag:
    """Point ``repository:tag`` at ``digest``, pushed at ``at``. An event's push (``from_event``,
    ``at`` by the registry's clock) older than the last event applied to the tag changes nothing:
    each registry replica sends its own events, retried with backoff, so they arrive out of
    order. The usage scan's write (``from_event=False``, ``at`` its start) is the registry's
    state as it read it. Every call stamps ``updated_at`` with the control plane's clock, even
    when nothing else changes: the usage scan leaves alone a tag written since it started."""
    repo, now = repository_get(registry, repository), timezone.now()
    event_at = at if from_event else None
    found, created = Tag.objects.get_or_create(
        repository=repo,
        name=tag,
        defaults={"digest": digest, "pushed_at": at, "updated_at": now, "event_at": event_at},
    )
    if not created:
        if not (from_event and found.event_at is not None and found.event_at > at):
            found.digest, found.pushed_at, found.event_at = digest, at, event_at
        found.updated_at = now
        found.save(update_fields=["digest", "pushed_at", "updated_at", "event_at"])
    if repo.last_push_at is None or repo.last_push_at < at:
        Repository.objects.filter(pk=repo.pk).update(last_push_at=at)
    # Kept on the instance too: the next event of a batch compares with this one's time.
    registry.last_push_at = _later(registry.last_push_at, at)
    Registry.objects.filter(pk=registry.pk).update(last_push_at=registry.last_push_at)
    return found


def tags_remove(
    registry: Registry,
    *,
    repository: str,
    tag: str | None = None,
    digest: str | None = None,
    before: datetime | None = None,
) -> int:
    """Forget a tag by name, or every tag of ``repository`` that points to ``digest``; with
    ``before`` (a deletion event's time), not a tag an event pushed again since (events from
    several replicas arrive out of order)."""
    tags = Tag.objects.filter(repository__registry=registry, repository__name=repository)
    if tag is not None:
        tags = tags.filter(name=tag)
    if digest is not None:
        tags = tags.filter(digest=digest)
    if before is not None:
        tags = tags.exclude(event_at__gt=before)
    deleted, _ = tags.delete()
    return deleted


def pulled(registry: Registry, *, repository: str, reference: str, at: datetime) -> None:
    """Record a pull of ``repository`` by tag or digest at ``at`` (a later pull already recorded
    stays: events arrive out of order)."""
    tags = Tag.objects.filter(repository__registry=registry, repository__name=repository)
    field = "digest" if reference.startswith("sha256:") else "name"
    earlier = Q(last_pulled_at__isnull=True) | Q(last_pulled_at__lt=at)
    tags.filter(earlier, **{field: reference}).update(last_pulled_at=at)
    Repository.objects.filter(
        Q(last_pull_at__isnull=True) | Q(last_pull_at__lt=at), registry=registry, name=repository
    ).update(last_pull_at=at)
    registry.last_pull_at = _later(registry.last_pull_at, at)
    Registry.objects.filter(pk=registry.pk).update(last_pull_at=registry.last_pull_at)


def usage_count(
    registry: Registry, *, repository: str, day: date, pushes: int = 0, pulls: int = 0
) -> None:
    """Add pushes and pulls to the registry's and the repository's day."""
    for name in (WHOLE_REGISTRY, repository):
        updated = UsageDay.objects.filter(registry=registry, repository=name, day=day).update(
            pushes=F("pushes") + pushes, pulls=F("pulls") + pulls
        )
        if not updated:
            UsageDay.objects.create(
                registry=registry, repository=name, day=day, pushes=pushes, pulls=pulls
            )


def usage_refresh(registry: Registry, *, now: datetime | None = None) -> Registry:
    """Recompute the registry's and each repository's totals from the inventory, record today's
    storage, and let the quotas judge the new figure. Call it last, with the row locked."""
    now = now or timezone.now()
    manifests = {
        digest: (size, blobs)
        for digest, size, blobs in Manifest.objects.filter(registry=registry).values_list(
            "digest", "size", "blobs"
        )
    }
    everything: dict[str, int] = {}
    tags = 0
    repositories = list(Repository.objects.filter(registry=registry))
    by_repository: dict[int, list[tuple[int, str, int]]] = {}
    for pk, repository_id, digest, old_bytes in Tag.objects.filter(
        repository__registry=registry
    ).values_list("pk", "repository_id", "digest", "bytes"):
        by_repository.setdefault(repository_id, []).append((pk, digest, old_bytes))
    for repository in repositories:
        blobs: dict[str, int] = {}
        for pk, digest, old_bytes in by_repository.get(repository.pk, []):
            size, referenced = manifests.get(digest, (0, {}))
            tag_blobs = {digest: size, **{d: int(s) for d, s in referenced.items()}}
            blobs.update(tag_blobs)
            tag_bytes = sum(tag_blobs.values())
            if tag_bytes != old_bytes:
                Tag.objects.filter(pk=pk).update(bytes=tag_bytes)
        count = len(by_repository.get(repository.pk, []))
        tags += count
        everything.update(blobs)
        total = sum(blobs.values())
        if (repository.bytes, repository.tag_count) != (total, count):
            Repository.objects.filter(pk=repository.pk).update(
                bytes=total, tag_count=count, updated_at=now
            )
    registry.usage_bytes = sum(everything.values())
    registry.usage_repositories = len(repositories)
    registry.usage_tags = tags
    Registry.objects.filter(pk=registry.pk).update(
        usage_bytes=registry.usage_bytes,
        usage_repositories=registry.usage_repositories,
        usage_tags=registry.usage_tags,
    )
    _record_storage(registry, now.date(), registry.usage_bytes)
    quota_evaluate(registry)
    return registry


def manifests_unreferenced_delete(registry: Registry, keep: Iterable[str] = ()) -> int:
    """Forget the manifests no tag points to any more (and none in ``keep``), keeping the members
    of every tagged index: an index pushed later finds them and is recorded complete."""
    used = set(Tag.objects.filter(repository__registry=registry).values_list("digest", flat=True))
    for blobs in Manifest.objects.filter(registry=registry, digest__in=used).values_list(
        "blobs", flat=True
    ):
        used.update(blobs)
    used.update(keep)
    deleted, _ = Manifest.objects.filter(registry=registry).exclude(digest__in=used).delete()
    return deleted


def _record_storage(registry: Registry, day: date, size: int) -> None:
    if not UsageDay.objects.filter(registry=registry, repository=WHOLE_REGISTRY, day=day).update(
        bytes=size
    ):
        UsageDay.objects.create(registry=registry, repository=WHOLE_REGISTRY, day=day, bytes=size)


def _later(current: datetime | None, at: datetime) -> datetime:
    return at if current is None or current < at else current
