"""Organizations and clusters: creation, update and deletion.

A cluster's name is unique in its organization, checked with a message naming the field and
guarded by the database constraint against a concurrent writer (``insert_or_explain``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from clusters import locks
from clusters.models import Cluster, Organization, Queue
from clusters.services.audit import audit_record, changes, snapshot
from clusters.signals import cluster_deleted

logger = logging.getLogger("clusters.services")


#: What the audit log shows of a cluster: ``CLUSTER_CREATED``'s data, ``CLUSTER_UPDATED``'s changes.
CLUSTER_FIELDS = (
    "name", "description", "emoji", "color", "hosted_git_mirror_enabled",
    "hosted_container_cache_enabled", "default_queue",
)  # fmt: skip


def organization_create(*, slug: str, name: str) -> Organization:
    organization = Organization(slug=slug, name=name)
    organization.full_clean()
    with transaction.atomic():
        organization.save()
        audit_record(
            type="ORGANIZATION_CREATED",
            organization=organization,
            subject_type="ORGANIZATION",
            subject_uuid=organization.uuid,
            subject_name=organization.name,
            data={"slug": slug, "name": name},
        )
    return organization


def organization_get_or_create(*, slug: str) -> tuple[Organization, bool]:
    """The organization ``slug``, created (named after its slug) if there is none; and whether
    it was created. For the commands that set up an organization from the command line."""
    organization = Organization.objects.filter(slug=slug).first()
    if organization is not None:
        return organization, False
    return organization_create(slug=slug, name=slug.title()), True


def cluster_create(
    *,
    organization: Organization,
    name: str,
    description: str = "",
    emoji: str = "",
    color: str = "",
    hosted_git_mirror_enabled: bool = False,
    hosted_container_cache_enabled: bool = False,
    created_by: User | None = None,
    cluster_id: uuid.UUID | None = None,
) -> Cluster:
    """Create a cluster; ``cluster_id`` keeps the id another part of the platform gave it. The
    hosted flags are Buildkite's, kept and shown for its clients (this service has no git
    mirror or container cache of its own)."""
    cluster = Cluster(
        pk=cluster_id or uuid.uuid4(),
        organization=organization,
        name=name,
        description=description,
        emoji=emoji,
        color=color,
        hosted_git_mirror_enabled=hosted_git_mirror_enabled,
        hosted_container_cache_enabled=hosted_container_cache_enabled,
        created_by=created_by,
    )
    _save_cluster(cluster, create=True, audit=lambda: _cluster_audit(cluster, "CLUSTER_CREATED"))
    logger.info("cluster.created", extra={"cluster_id": str(cluster.pk)})
    return cluster


def _cluster_audit(cluster: Cluster, type: str, data: dict[str, Any] | None = None) -> None:
    audit_record(
        type=type,
        organization=cluster.organization_id,
        subject_type="CLUSTER",
        subject_uuid=cluster.pk,
        subject_name=cluster.name,
        data=snapshot(cluster, *CLUSTER_FIELDS) if data is None else data,
    )


def _save_cluster(
    cluster: Cluster, *, create: bool = False, audit: Callable[[], object] | None = None
) -> None:
    """Validate and save (and call ``audit`` in the same transaction); a name taken in the
    organization is a ValidationError on ``name``. A creation never overwrites an existing row
    with the same id (it is an error on ``id``)."""
    duplicate = ValidationError(
        {"name": f"A cluster named {cluster.name!r} already exists in this organization."}
    )
    taken = Cluster.objects.filter(organization_id=cluster.organization_id, name=cluster.name)
    # The organization (and the creator) are rows the caller holds, not input to look up.
    cluster.full_clean(
        exclude=["organization", "created_by"] if create else None,
        validate_unique=not create,
        validate_constraints=False,
    )
    insert_or_explain(
        cluster, duplicate=duplicate, taken=taken.exclude(pk=cluster.pk), create=create, audit=audit
    )


def insert_or_explain(
    obj: Cluster | Queue,
    *,
    duplicate: ValidationError,
    taken: QuerySet[Cluster] | QuerySet[Queue],
    create: bool = True,
    audit: Callable[[], object] | None = None,
) -> None:
    """Save ``obj`` with its database constraints as the check, so that a write that conflicts
    with nothing (nearly all of them) reads nothing first; a conflict is explained by
    ``conflict_error``. The save and its audit row (``audit``) are one transaction; inside the
    caller's, a savepoint, so that the caller's transaction survives the conflict."""
    try:
        with transaction.atomic():
            obj.save(force_insert=create)
            if audit is not None:
                audit()
    except IntegrityError as exc:
        raise conflict_error(obj, duplicate=duplicate, taken=taken, create=create) from exc


def conflict_error(
    obj: Cluster | Queue,
    *,
    duplicate: ValidationError,
    taken: QuerySet[Cluster] | QuerySet[Queue],
    create: bool = True,
) -> ValidationError:
    """Why saving ``obj`` broke a constraint: ``duplicate`` if ``taken`` (the other rows holding
    its unique value) finds one, or an error on ``id`` if a creation found a row with the same id
    (a creation never overwrites one), else ``duplicate``."""
    if not taken.exists() and create and type(obj).objects.filter(pk=obj.pk).exists():
        name = type(obj)._meta.verbose_name
        return ValidationError({"id": f"A {name} with this id already exists."})
    return duplicate


class _Unset:
    """Marks an argument that was not given, where None is a meaningful value."""


UNSET = _Unset()


def cluster_update(
    *,
    cluster: Cluster,
    name: str | None = None,
    description: str | None = None,
    emoji: str | None = None,
    color: str | None = None,
    hosted_git_mirror_enabled: bool | None = None,
    hosted_container_cache_enabled: bool | None = None,
    default_queue: Queue | None | _Unset = UNSET,
) -> Cluster:
    """Change what was given; ``default_queue=None`` clears the default queue, which must
    otherwise be one of this cluster's queues."""
    with transaction.atomic():
        cluster = locks.cluster_lock_or_raise(cluster.pk)
        before = snapshot(cluster, *CLUSTER_FIELDS)
        given = {
            "name": name,
            "description": description,
            "emoji": emoji,
            "color": color,
            "hosted_git_mirror_enabled": hosted_git_mirror_enabled,
            "hosted_container_cache_enabled": hosted_container_cache_enabled,
        }
        for field, value in given.items():
            if value is not None:
                setattr(cluster, field, value)
        if not isinstance(default_queue, _Unset):
            cluster.default_queue = default_queue
        after = snapshot(cluster, *CLUSTER_FIELDS)
        _save_cluster(
            cluster,
            audit=lambda: _cluster_audit(cluster, "CLUSTER_UPDATED", changes(before, after)),
        )
    return cluster


def cluster_delete(*, cluster: Cluster) -> None:
    """Delete a cluster with its queues, agent tokens and agent environment, as Buildkite does.

    ``cluster_deleted`` is sent first, in the same transaction, so that other apps release what
    they keep of the cluster; the registry app starts deprovisioning its registry.
    """
    cluster_id = cluster.pk
    with transaction.atomic():
        locked = locks.cluster_lock(cluster_id)
        if locked is None:
            return
        # The registry's deprovisioning that the signal starts is part of this deletion: this
        # row is its record (docs/audit.md).
        cluster_deleted.send(sender=Cluster, cluster=locked)
        _cluster_audit(locked, "CLUSTER_DELETED", {"name": locked.name})
        locked.delete()
    logger.info("cluster.deleted", extra={"cluster_id": str(cluster_id)})
