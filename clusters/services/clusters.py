"""Organizations and clusters: creation, update and deletion.

A cluster's name is unique in its organization, checked with a message naming the field and
guarded by the database constraint against a concurrent writer (``insert_or_explain``).
"""

from __future__ import annotations

import logging
import uuid

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from clusters import locks
from clusters.models import Cluster, Organization, Queue
from clusters.signals import cluster_deleted

logger = logging.getLogger("clusters.services")


def organization_create(*, slug: str, name: str) -> Organization:
    organization = Organization(slug=slug, name=name)
    organization.full_clean()
    organization.save()
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
    _save_cluster(cluster, create=True)
    logger.info("cluster.created", extra={"cluster_id": str(cluster.pk)})
    return cluster


def _save_cluster(cluster: Cluster, *, create: bool = False) -> None:
    """Validate and save; a name taken in the organization is a ValidationError on ``name``,
    also when a concurrent request took it between the check and the save. A creation never
    overwrites an existing row with the same id (it is an error on ``id``)."""
    duplicate = ValidationError(
        {"name": f"A cluster named {cluster.name!r} already exists in this organization."}
    )
    taken = Cluster.objects.filter(organization_id=cluster.organization_id, name=cluster.name)
    if taken.exclude(pk=cluster.pk).exists():
        raise duplicate
    cluster.full_clean(validate_constraints=False)
    insert_or_explain(cluster, duplicate=duplicate, create=create)


def insert_or_explain(
    obj: Cluster | Queue, *, duplicate: ValidationError, create: bool = True
) -> None:
    """Save ``obj``, with its database constraints as the last guard against a concurrent
    writer: a creation never overwrites a row with the same id (an error on ``id``), and any
    other conflict is ``duplicate``."""
    try:
        with transaction.atomic():
            obj.save(force_insert=create)
    except IntegrityError as exc:
        if create and type(obj).objects.filter(pk=obj.pk).exists():
            name = type(obj)._meta.verbose_name
            raise ValidationError({"id": f"A {name} with this id already exists."}) from exc
        raise duplicate from exc


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
        changes = {
            "name": name,
            "description": description,
            "emoji": emoji,
            "color": color,
            "hosted_git_mirror_enabled": hosted_git_mirror_enabled,
            "hosted_container_cache_enabled": hosted_container_cache_enabled,
        }
        for field, value in changes.items():
            if value is not None:
                setattr(cluster, field, value)
        if not isinstance(default_queue, _Unset):
            cluster.default_queue = default_queue
        _save_cluster(cluster)
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
        cluster_deleted.send(sender=Cluster, cluster=locked)
        locked.delete()
    logger.info("cluster.deleted", extra={"cluster_id": str(cluster_id)})
