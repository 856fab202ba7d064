"""Distribution's notifications (docs/usage.md#registry-events): recorded as they arrive, applied
to the inventory by a worker, pruned once old.

``notifications_receive`` is the endpoint's one write: it matches each event to its registry by
the repository's namespace (one query for the batch), keeps the manifest events (a blob's push,
pull or mount says nothing the manifest's does not), inserts them in one statement that skips
event ids already recorded (idempotence: Distribution retries a batch it thinks failed), and
asks a worker to apply them once the transaction commits. The rows are the record: a message
the broker lost is made up by the sweep (``notifications_sweep``, Celery beat).

``notifications_apply`` applies a registry's unapplied events in the order they were received,
a batch per transaction, holding the registry row (``inventory_lock``) as every inventory write
does, through the writers of ``registries.services.usage``; ``usage_refresh`` ends each batch.
An event is applied once: its row is marked in the transaction that applied it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import metrics
from controlplane.celery import app as celery_app
from registries.inventory import INDEX_MEDIA_TYPES, Manifest, RegistryNotification
from registries.locks import notifications_unapplied_lock, registry_lock_unless_held
from registries.models import Registry
from registries.services.usage import (
    inventory_lock,
    manifest_put,
    manifests_unreferenced_delete,
    pulled,
    tag_put,
    tags_remove,
    usage_count,
    usage_refresh,
)
from registries.tokens import CONTROL_PLANE_SUBJECT

logger = logging.getLogger(__name__)

NOTIFICATIONS_TASK = "registries.notifications"
ACTIONS = ("push", "pull", "delete", "mount")
MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES | {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.manifest.v1+json",
}
#: Events a worker applies in one transaction.
APPLY_BATCH = 500


@dataclass(frozen=True)
class Notification:
    """One event of Distribution's envelope, as the endpoint validated it."""

    id: str
    action: str
    repository: str
    occurred_at: datetime
    target: dict[str, Any]
    #: The HTTP method of the request that caused it, and the token's subject (``actor.name``).
    method: str = ""
    actor: str = ""

    @property
    def is_counted(self) -> bool:
        """A manifest event the inventory applies. Not a pull made with ``HEAD`` (a client or
        the control plane asking for a digest reads nothing), nor any pull by the control
        plane itself (the usage scan and tag deletion read manifests too)."""
        if not self.is_manifest:
            return False
        return self.action != "pull" or (
            self.method != "HEAD" and self.actor != CONTROL_PLANE_SUBJECT
        )

    @property
    def is_manifest(self) -> bool:
        """A manifest's push or pull, or a delete (whose target has no media type)."""
        if self.action == "delete":
            return True
        return self.action in ("push", "pull") and (
            self.target.get("mediaType") in MANIFEST_MEDIA_TYPES
        )


@dataclass
class Received:
    """What became of a batch's events."""

    received: int = 0
    duplicate: int = 0
    ignored: int = 0
    unmatched: int = 0
    registry_ids: list[str] = field(default_factory=list)


def namespace_of(repository: str) -> str:
    """The ``<org>/<12 hex>`` a cluster's repository starts with."""
    return "/".join(repository.split("/", 2)[:2])


def notifications_receive(
    events: Sequence[Notification], *, now: datetime | None = None
) -> Received:
    """Record a batch of validated events (idempotent by event id) and enqueue their application.

    Events of a namespace no registry has (the backends' canary namespace, a registry's row
    deleted since) are dropped and counted: nothing could apply them."""
    now = now or timezone.now()
    result = Received()
    wanted: dict[str, Notification] = {}
    for event in events:
        if not event.is_counted:
            result.ignored += 1
        elif event.id in wanted:
            result.duplicate += 1
        else:
            wanted[event.id] = event
    namespaces = {namespace_of(event.repository) for event in wanted.values()}
    registries = (
        dict(Registry.objects.filter(namespace__in=namespaces).values_list("namespace", "pk"))
        if namespaces
        else {}
    )
    rows: list[RegistryNotification] = []
    for event in wanted.values():
        # A microsecond apart, so that the batch applies in its own order (``received_at``).
        received_at = now + timedelta(microseconds=len(rows))
        registry_id = registries.get(namespace_of(event.repository))
        if registry_id is None:
            result.unmatched += 1
            continue
        rows.append(
            RegistryNotification(
                id=event.id,
                registry_id=registry_id,
                action=event.action,
                repository=event.repository,
                occurred_at=event.occurred_at,
                target=event.target,
                received_at=received_at,
            )
        )
    if rows:
        # No transaction needed: the insert skips ids recorded meanwhile, so two copies of a
        # batch at once record it once (and may both count it as received).
        known = set(
            RegistryNotification.objects.filter(pk__in=[row.pk for row in rows]).values_list(
                "pk", flat=True
            )
        )
        new = [row for row in rows if row.pk not in known]
        result.duplicate += len(known)
        result.received = len(new)
        if new:
            RegistryNotification.objects.bulk_create(new, ignore_conflicts=True)
            result.registry_ids = sorted({str(row.registry_id) for row in new})
            _enqueue(result.registry_ids)
    for outcome in ("received", "duplicate", "ignored", "unmatched"):
        if count := getattr(result, outcome):
            metrics.REGISTRY_NOTIFICATIONS.labels(outcome).inc(count)
    return result


def _enqueue(registry_ids: list[str]) -> None:
    """Ask a worker to apply the registries' events once the transaction commits. A message the
    broker does not take is logged; the rows stay, and the sweep applies them."""

    def send() -> None:
        try:
            celery_app.tasks[NOTIFICATIONS_TASK].delay(registry_ids)
        except Exception:
            logger.exception(
                "registry.notifications.enqueue_failed", extra={"registry_ids": registry_ids}
            )

    transaction.on_commit(send)


def notifications_apply(*, registry_id: uuid.UUID | str, limit: int = APPLY_BATCH) -> int:
    """Apply the registry's unapplied events, ``limit`` a transaction, in the order received;
    the number applied (0 when there are none)."""
    return _apply_rows(registry_id, limit, wait=True) or 0


def notifications_apply_unless_busy(
    *, registry_id: uuid.UUID | str, limit: int = APPLY_BATCH
) -> int | None:
    """``notifications_apply``, unless another worker holds the registry: None then, at once.
    That worker reads the rows until none is left, so a burst of events to one registry keeps
    one worker busy rather than one per message waiting on its row (docs/usage.md)."""
    return _apply_rows(registry_id, limit, wait=False)


def _apply_rows(registry_id: uuid.UUID | str, limit: int, *, wait: bool) -> int | None:
    applied = 0
    while True:
        with transaction.atomic():
            registry = (inventory_lock if wait else registry_lock_unless_held)(registry_id)
            if registry is None:  # gone, or held by another worker (``wait=False``)
                return applied or (0 if wait else None)
            rows = notifications_unapplied_lock(registry_id, limit=limit)
            if not rows:
                return applied
            changed = [_apply(registry, row) for row in rows]
            if any(changed):  # pulls alone change no total
                usage_refresh(registry)
            RegistryNotification.objects.filter(pk__in=[row.pk for row in rows]).update(
                applied_at=timezone.now()
            )
        applied += len(rows)
        metrics.REGISTRY_NOTIFICATIONS.labels("applied").inc(len(rows))
        logger.info(
            "registry.notifications.applied",
            extra={"registry_id": str(registry_id), "count": len(rows)},
        )
        if len(rows) < limit:
            return applied


def _apply(registry: Registry, row: RegistryNotification) -> bool:
    """Apply one event; whether it changed what the registry holds (and so its totals)."""
    target, at = row.target, row.occurred_at
    digest, tag = target.get("digest"), target.get("tag")
    day = at.astimezone(UTC).date()
    if row.action == "push" and digest:
        blobs, complete = _referenced(registry, target)
        manifest_put(
            registry,
            digest=digest,
            media_type=target.get("mediaType", ""),
            size=int(target.get("size") or target.get("length") or 0),
            blobs=blobs,
            complete=complete,
        )
        if tag:
            tag_put(registry, repository=row.repository, tag=tag, digest=digest, at=at)
            usage_count(registry, repository=row.repository, day=day, pushes=1)
        return True
    if row.action == "pull" and (tag or digest):
        pulled(registry, repository=row.repository, reference=tag or digest, at=at)
        usage_count(registry, repository=row.repository, day=day, pulls=1)
        return False
    if row.action == "delete" and digest:
        # A tag pushed again since (to this digest, from another replica's later event) stays.
        removed = tags_remove(registry, repository=row.repository, digest=digest, before=at)
        return bool(manifests_unreferenced_delete(registry) or removed)
    if row.action == "delete" and tag:
        # Distribution follows a manifest's deletion with one per tag it had: a tag pushed again
        # since (to another manifest) is not the one deleted.
        return bool(tags_remove(registry, repository=row.repository, tag=tag, before=at))
    return False


def _referenced(registry: Registry, target: dict[str, Any]) -> tuple[dict[str, int], bool]:
    """The blobs a pushed manifest references (``references``: ``includereferences``), and
    whether they are all known: an index's members count with their own blobs when recorded
    (they are pushed before the index), else the scan completes the record."""
    references = target.get("references")
    if not references:
        return {}, False  # every manifest references a config at least: the event left them out
    blobs: dict[str, int] = {}
    complete = True
    members = [r["digest"] for r in references if r.get("mediaType") in MANIFEST_MEDIA_TYPES]
    known = {
        manifest.digest: manifest
        for manifest in Manifest.objects.filter(registry=registry, digest__in=members)
    }
    for reference in references:
        blobs[reference["digest"]] = int(reference.get("size") or 0)
        if reference["digest"] in members:
            member = known.get(reference["digest"])
            if member is None or not member.complete:
                complete = False
            else:
                blobs.update({d: int(s) for d, s in member.blobs.items()})
    return blobs, complete


def notifications_unapplied_registries() -> list[str]:
    """The registries with events not applied yet (their message lost, or still queued)."""
    ids = (
        RegistryNotification.objects.filter(applied_at__isnull=True)
        .values_list("registry_id", flat=True)
        .distinct()
    )
    return sorted(str(pk) for pk in ids if pk is not None)


def notifications_prune(*, now: datetime | None = None) -> int:
    """Delete the applied events older than ``REGISTRY_NOTIFICATIONS_KEEP_DAYS``."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.REGISTRY_NOTIFICATIONS_KEEP_DAYS)
    deleted, _ = RegistryNotification.objects.filter(
        received_at__lt=cutoff, applied_at__isnull=False
    ).delete()
    return deleted


def notifications_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Apply whatever is unapplied (a lost message, a dead worker), then prune."""
    applied = sum(
        notifications_apply(registry_id=pk) for pk in notifications_unapplied_registries()
    )
    return {"applied": applied, "pruned": notifications_prune(now=now)}
