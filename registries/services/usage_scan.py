"""The usage scan: rebuild a registry's inventory from the registry itself, and repair what the
notifications missed (they are hints: a replica queues them in memory and may lose them).

A scan reads the namespace first, over the network and outside any transaction
(``registries.drivers.inventory``: the catalog, the tags, a ``HEAD`` per tag, and only the
manifests not already known completely), then applies what it saw in one transaction holding
the registry's row lock (``inventory_lock``), through the same writes as the notifications:

- a tag the registry has and the inventory lacks, or points elsewhere, is put with the scan's
  start as its push time (the registry does not say when a tag was pushed; it was by then);
- a tag the inventory has and the registry lacks is removed;
- but a tag written after the scan started (``Tag.updated_at``, the control plane's clock, not
  the registry's ``pushed_at``) is left alone, whatever the scan saw: an event applied
  meanwhile knows better than a read that began before it;
- and a tag is never pointed at a manifest the inventory no longer records and the scan did
  not fetch: its last tag was deleted after the read (the next scan fetches it if it is back);
- repositories the catalog lists are kept even with no tag left (Distribution keeps them);
  those it does not list and that hold no tag are removed;
- manifests no tag points to are forgotten, except those recorded since the scan started;
- then the totals (``usage_refresh``) and ``usage_scanned_at``.

Pushes and pulls per day are counted by the notifications only: the scan cannot tell a push it
finds from one whose event is still on its way, so counting it would count it twice.

A scan that cannot read the registry changes nothing: it is logged and counted, and the registry
waits for its next turn. The rounds (``registries_usage_scan_claim``) take the registries that
are due, longest due first, a batch at a time, as the health canaries' rounds do.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import metrics
from registries.drivers import DriverError, get_driver
from registries.drivers.inventory import ManifestRecord, NamespaceInventory, namespace_inventory
from registries.inventory import Manifest, Repository, Tag
from registries.locks import registries_usage_scan_due_lock
from registries.models import Registry, State
from registries.services.placement import registry_backend
from registries.services.usage import (
    inventory_lock,
    manifest_put,
    manifests_unreferenced_delete,
    repository_get,
    tag_put,
    tags_remove,
    usage_refresh,
)

logger = logging.getLogger("registries.services")


@dataclass(frozen=True)
class UsageScanResult:
    """What one scan found and changed."""

    ok: bool
    duration: timedelta
    #: Manifests fetched from the registry (known ones are not fetched again).
    fetched: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    #: The registry's figures after the scan.
    repositories: int = 0
    tags: int = 0
    bytes: int = 0
    #: Why it failed, for tenants (``DriverError.public``); the logs have the detail.
    error: str = ""


def registry_usage_scan(*, registry_id: uuid.UUID | str) -> UsageScanResult | None:
    """Rebuild a ready registry's inventory from the registry (see the module). None if the
    registry is not ready (or gone); a failed result, with nothing changed, if the registry
    could not be read."""
    registry = Registry.objects.ready().filter(pk=registry_id).first()
    if registry is None:
        return None
    started, clock = timezone.now(), time.monotonic()
    backend = ""
    try:
        placed = registry_backend(registry)
        backend = placed.name if placed else ""
        seen = namespace_inventory(
            get_driver(registry.driver, placed),
            namespace=registry.namespace,
            known=_known_manifests(registry),
        )
    except DriverError as exc:
        return _failed(registry, backend, exc, clock)
    metrics.USAGE_SCAN_MANIFESTS.labels(backend).inc(seen.fetched)
    with transaction.atomic():
        locked = inventory_lock(registry.pk)
        if locked is None or locked.state != State.READY:
            return None
        added, updated, removed = _apply(locked, seen, started)
        now = timezone.now()
        usage_refresh(locked, now=now)
        locked.usage_scanned_at = now
        Registry.objects.filter(pk=locked.pk).update(usage_scanned_at=now)
    result = UsageScanResult(
        ok=True,
        duration=timedelta(seconds=time.monotonic() - clock),
        fetched=seen.fetched,
        added=added,
        updated=updated,
        removed=removed,
        repositories=locked.usage_repositories,
        tags=locked.usage_tags,
        bytes=locked.usage_bytes,
    )
    _count(backend, "scanned", result.duration)
    logger.info(
        "registry.usage_scan.scanned",
        extra={
            "registry_id": str(registry.pk),
            "duration_ms": round(result.duration.total_seconds() * 1000, 1),
            "manifests_fetched": seen.fetched,
            "tags_added": added,
            "tags_updated": updated,
            "tags_removed": removed,
            "usage_bytes": result.bytes,
        },
    )
    return result


def _known_manifests(registry: Registry) -> dict[str, ManifestRecord]:
    """The manifests the inventory knows completely: digests are immutable, so these are not
    fetched again."""
    rows = Manifest.objects.filter(registry=registry, complete=True).values_list(
        "digest", "media_type", "size", "blobs"
    )
    return {
        digest: ManifestRecord(digest, media_type, size, {d: int(s) for d, s in blobs.items()})
        for digest, media_type, size, blobs in rows
    }


def _apply(registry: Registry, seen: NamespaceInventory, started: datetime) -> tuple[int, int, int]:
    """Make the locked registry's inventory what ``seen`` says, but for what changed since
    ``started``; returns the tags added, updated and removed."""
    for record in seen.manifests.values():
        manifest_put(
            registry,
            digest=record.digest,
            media_type=record.media_type,
            size=record.size,
            blobs=record.blobs,
        )
    # ``updated_at``, not ``pushed_at``: both sides of the comparison on the control plane's clock.
    current = {
        (repository, tag): (digest, updated_at)
        for repository, tag, digest, updated_at in Tag.objects.filter(
            repository__registry=registry
        ).values_list("repository__name", "name", "digest", "updated_at")
    }
    # The manifests recorded now, those just fetched included: one the scan knew when it read
    # the registry, and did not fetch, may have been forgotten since (its last tag deleted).
    recorded = set(Manifest.objects.filter(registry=registry).values_list("digest", flat=True))
    added = updated = removed = 0
    for repository, tags in seen.repositories.items():
        repository_get(registry, repository)
        for tag, digest in tags.items():
            found = current.get((repository, tag))
            if found is not None and (found[0] == digest or found[1] > started):
                continue
            if digest not in recorded:
                continue  # deleted meanwhile, or the next scan fetches it
            tag_put(
                registry,
                repository=repository,
                tag=tag,
                digest=digest,
                at=started,
                from_event=False,
            )
            added, updated = added + (found is None), updated + (found is not None)
    for (repository, tag), (_, updated_at) in current.items():
        if tag not in seen.repositories.get(repository, {}) and updated_at <= started:
            removed += tags_remove(registry, repository=repository, tag=tag)
    # Gone from the catalog, empty, and not created by an event since the scan started.
    empty = Repository.objects.filter(registry=registry, created_at__lte=started, tags__isnull=True)
    empty.exclude(name__in=list(seen.repositories)).delete()
    recent = Manifest.objects.filter(registry=registry, created_at__gt=started)
    manifests_unreferenced_delete(registry, keep=recent.values_list("digest", flat=True))
    return added, updated, removed


def _failed(registry: Registry, backend: str, exc: DriverError, clock: float) -> UsageScanResult:
    duration = timedelta(seconds=time.monotonic() - clock)
    _count(backend, "failed", duration)
    logger.warning(
        "registry.usage_scan.failed",
        extra={"registry_id": str(registry.pk), "backend": backend, "error": exc.detail},
    )
    return UsageScanResult(ok=False, duration=duration, error=exc.public)


def _count(backend: str, outcome: str, duration: timedelta) -> None:
    metrics.USAGE_SCANS.labels(backend, outcome).inc()
    metrics.USAGE_SCAN_SECONDS.labels(outcome).observe(duration.total_seconds())


def registries_usage_scan_claim(*, now: datetime | None = None) -> list[uuid.UUID]:
    """Take the ready registries due for a usage scan, at most ``REGISTRY_USAGE_SCAN_BATCH``,
    longest due first, and make each due again ``REGISTRY_USAGE_SCAN_SECONDS`` from now (whether
    or not its scan then runs or succeeds: a failing registry waits its turn like the others).
    Rows another transaction holds are left for the next round. Returns their ids."""
    now = now or timezone.now()
    with transaction.atomic():
        due = registries_usage_scan_due_lock(now=now, limit=settings.REGISTRY_USAGE_SCAN_BATCH)
        if due:
            period = timedelta(seconds=settings.REGISTRY_USAGE_SCAN_SECONDS)
            Registry.objects.filter(pk__in=due).update(usage_scan_due_at=now + period)
    return due
