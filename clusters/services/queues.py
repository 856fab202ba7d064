"""Queues: creation (and the first hosted queue's signal), deletion, update, resizing and
pausing dispatch.

A queue with an instance shape is hosted; it never converts to self-hosted or back, and only its
size may change (``queue_shape_change_error``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from clusters import instance_shapes, locks
from clusters.models import Cluster, Queue, RetryAgentAffinity
from clusters.services.audit import audit_record, changes, snapshot
from clusters.services.clusters import conflict_error
from clusters.signals import first_hosted_queue_created

logger = logging.getLogger("clusters.services")

#: What the audit log shows of a queue (``CLUSTER_QUEUE_CREATED``'s data, updates' changes).
QUEUE_FIELDS = (
    "key", "description", "instance_shape", "agent_image_ref", "retry_agent_affinity",
    "dispatch_paused", "dispatch_paused_note",
)  # fmt: skip


def _queue_audit(queue: Queue, type: str, data: dict[str, Any]) -> None:
    """The queue's audit row, under its cluster's organization (read with the cluster's lock,
    or its id taken from the cluster the caller holds: nothing is read for it)."""
    organization_id = queue.cluster.organization_id if Queue.cluster.is_cached(queue) else None
    if organization_id is None:
        organization_id = Cluster.objects.values_list("organization_id", flat=True).get(
            pk=queue.cluster_id
        )
    audit_record(
        type=type,
        organization=organization_id,
        subject_type="CLUSTER_QUEUE",
        subject_uuid=queue.pk,
        subject_name=queue.key,
        data={"cluster_id": str(queue.cluster_id), **data},
    )


def _unknown_shape_error(instance_shape: str) -> str | None:
    if instance_shape and instance_shape not in instance_shapes.SHAPES:
        return f"{instance_shape!r} is not a known instance shape; use one of " + ", ".join(
            instance_shapes.SHAPES
        )
    return None


def queue_create(
    *,
    cluster: Cluster,
    key: str,
    description: str = "",
    instance_shape: str = "",
    retry_agent_affinity: str = RetryAgentAffinity.PREFER_WARMEST,
    created_by: User | None = None,
    queue_id: uuid.UUID | None = None,
) -> Queue:
    """Create a queue; a queue with an ``instance_shape`` is hosted. Its agent image is the
    default one (as on Buildkite, ``queue_update`` sets a custom one). ``queue_id`` keeps the id
    another part of the platform gave it.

    The cluster row is locked first, so that concurrent creations on one cluster are serialised
    and exactly one of them sees itself as the cluster's first hosted queue and sends
    ``first_hosted_queue_created`` (inside this transaction).

    The key's uniqueness is the database's constraint: a taken key (or id) rolls the transaction
    back, and only then is it read which it was (``conflict_error``), so that a creation that
    conflicts with nothing reads nothing but the hosted queues.
    """
    if error := _unknown_shape_error(instance_shape):
        raise ValidationError({"instance_shape": error})
    queue = Queue(
        pk=queue_id or uuid.uuid4(),
        key=key,
        description=description,
        instance_shape=instance_shape,
        retry_agent_affinity=retry_agent_affinity,
        created_by=created_by,
    )
    inserted = False
    try:
        with transaction.atomic():
            queue.cluster = _cluster_locked(cluster)
            first_hosted = bool(instance_shape) and not queue.cluster.queues.hosted().exists()
            # The field validators cover what the check constraints say; the cluster (locked
            # just above) and the creator are rows the caller holds, not input to look up.
            queue.full_clean(
                exclude=["cluster", "created_by"], validate_unique=False, validate_constraints=False
            )
            queue.save(force_insert=True)
            inserted = True
            _queue_audit(queue, "CLUSTER_QUEUE_CREATED", snapshot(queue, *QUEUE_FIELDS[:5]))
            logger.info(
                "queue.created",
                extra={
                    "cluster_id": str(queue.cluster_id),
                    "queue_id": str(queue.pk),
                    "hosted": queue.hosted,
                },
            )
            if first_hosted:
                first_hosted_queue_created.send(sender=Queue, cluster=queue.cluster, queue=queue)
    except IntegrityError as exc:
        if inserted:
            raise
        duplicate = ValidationError(
            {"key": f"A queue with key {key!r} already exists in this cluster."}
        )
        taken = Queue.objects.filter(cluster_id=cluster.pk, key=key)
        raise conflict_error(queue, duplicate=duplicate, taken=taken) from exc
    return queue


def _cluster_locked(cluster: Cluster) -> Cluster:
    """Lock the cluster row, keeping the organization the caller had already read with it (the
    first hosted queue's registry is named after the organization)."""
    locked = locks.cluster_lock_or_raise(cluster.pk)
    if (
        Cluster.organization.is_cached(cluster)
        and cluster.organization_id == locked.organization_id
    ):
        locked.organization = cluster.organization
    return locked


def queue_delete(*, queue: Queue) -> None:
    """Delete a queue. If it was the cluster's default queue, the cluster has none afterwards.

    Deleting a cluster's last hosted queue leaves its registry as it is: images are the
    cluster's, not the queue's (see docs/architecture.md, "The registry state machine").
    """
    with transaction.atomic():
        cluster = locks.cluster_lock(queue.cluster_id)
        if cluster is not None:
            queue.cluster = cluster
        _queue_audit(queue, "CLUSTER_QUEUE_DELETED", {"key": queue.key})
        queue.delete()
    logger.info(
        "queue.deleted", extra={"cluster_id": str(queue.cluster_id), "queue_id": str(queue.pk)}
    )


def queue_shape_change_error(current: str, new: str) -> str | None:
    """Why a queue with shape ``current`` cannot take shape ``new``, or None if it can.

    A queue never converts between hosted and self-hosted, and a hosted queue keeps its machine
    type and architecture: only its size may change (as on Buildkite).
    """
    if new == current:
        return None
    if error := _unknown_shape_error(new):
        return error
    if not current or not new:
        return "A queue cannot change between hosted and self-hosted."
    old_shape, new_shape = instance_shapes.get(current), instance_shapes.get(new)
    if (old_shape.machine_type, old_shape.architecture) != (
        new_shape.machine_type,
        new_shape.architecture,
    ):
        return (
            f"Instance shape cannot be changed to {new}: only the size of a "
            f"{old_shape.machine_type}/{old_shape.architecture} queue can change."
        )
    return None


def queue_update(
    *,
    queue: Queue,
    description: str | None = None,
    instance_shape: str | None = None,
    agent_image_ref: str | None = None,
    retry_agent_affinity: str | None = None,
) -> Queue:
    """Change a queue's description or retry affinity, resize a hosted queue (see
    ``queue_shape_change_error``), or set a hosted Linux queue's agent image ("" for the
    default one).

    The checks run against the stored row, locked, not against the caller's copy of it.
    """
    with transaction.atomic():
        queue = locks.queue_lock_or_raise(queue.pk)
        before = snapshot(queue, *QUEUE_FIELDS)
        if instance_shape is not None:
            if error := queue_shape_change_error(queue.instance_shape, instance_shape):
                raise ValidationError({"instance_shape": error})
            queue.instance_shape = instance_shape
        if agent_image_ref is not None:
            if agent_image_ref and not queue.hosted:
                raise ValidationError(
                    {"agent_image_ref": "Agent image ref can only be set on hosted queues"}
                )
            if agent_image_ref and queue.shape and queue.shape.machine_type == "macos":
                message = "Agent image ref cannot be configured for hosted mac queues"
                raise ValidationError({"agent_image_ref": message})
            queue.agent_image_ref = agent_image_ref
        if description is not None:
            queue.description = description
        if retry_agent_affinity is not None:
            queue.retry_agent_affinity = retry_agent_affinity
        queue.full_clean(validate_constraints=False)
        queue.save(
            update_fields=[
                "description",
                "instance_shape",
                "agent_image_ref",
                "retry_agent_affinity",
            ]
        )
        after = snapshot(queue, *QUEUE_FIELDS)
        _queue_audit(queue, "CLUSTER_QUEUE_UPDATED", changes(before, after))
    return queue


def queue_pause_dispatch(*, queue: Queue, user: User | None = None, note: str = "") -> Queue:
    """Stop dispatching new jobs to the queue; jobs already on agents finish."""
    return _dispatch_set(queue, paused=True, user=user, note=note)


def queue_resume_dispatch(*, queue: Queue) -> Queue:
    """Dispatch jobs to the queue again; waiting jobs go to agents."""
    return _dispatch_set(queue, paused=False, user=None, note="")


def _dispatch_set(queue: Queue, *, paused: bool, user: User | None, note: str) -> Queue:
    """Pause or resume, checked against the locked row; who, when and why are cleared on
    resume."""
    with transaction.atomic():
        queue = locks.queue_lock_or_raise(queue.pk)
        before = snapshot(queue, *QUEUE_FIELDS)
        if queue.dispatch_paused == paused:
            raise ValidationError(
                "Cluster queue is already paused" if paused else "Cluster queue is not paused"
            )
        queue.dispatch_paused = paused
        queue.dispatch_paused_at = timezone.now() if paused else None
        queue.dispatch_paused_by = user
        queue.dispatch_paused_note = note
        queue.save(
            update_fields=[
                "dispatch_paused", "dispatch_paused_at", "dispatch_paused_by",
                "dispatch_paused_note",
            ]
        )  # fmt: skip
        # Buildkite records pausing and resuming as the queue's update.
        _queue_audit(
            queue, "CLUSTER_QUEUE_UPDATED", changes(before, snapshot(queue, *QUEUE_FIELDS))
        )
    event = "queue.dispatch_paused" if paused else "queue.dispatch_resumed"
    logger.info(event, extra={"queue_id": str(queue.pk)})
    return queue
