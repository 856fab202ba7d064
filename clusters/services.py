"""Writes to organizations, clusters, queues, agent tokens and the agent environment.

Every entry point (API, admin, webhook, demo, management commands) creates and changes these
through the functions here, never by saving models itself, so that the checks and the signals
happen once, in one place.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from clusters import instance_shapes
from clusters.models import (
    AgentEnvironmentVariable,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
)
from clusters.selectors import PLATFORM_VARIABLES
from clusters.signals import first_hosted_queue_created

logger = logging.getLogger(__name__)

AGENT_TOKEN_PREFIX = "bkct_"  # noqa: S105 - a marker for secret scanners, not a secret


def organization_create(*, slug: str, name: str) -> Organization:
    organization = Organization(slug=slug, name=name)
    organization.full_clean()
    organization.save()
    return organization


def cluster_create(
    *,
    organization: Organization,
    name: str,
    description: str = "",
    emoji: str = "",
    color: str = "",
) -> Cluster:
    cluster = Cluster(
        organization=organization, name=name, description=description, emoji=emoji, color=color
    )
    cluster.full_clean()
    cluster.save()
    logger.info("cluster.created", extra={"cluster_id": str(cluster.pk)})
    return cluster


def _validate_instance_shape(instance_shape: str) -> None:
    if instance_shape and instance_shape not in instance_shapes.SHAPES:
        raise ValidationError(
            {
                "instance_shape": (
                    f"{instance_shape!r} is not a known instance shape; use one of "
                    + ", ".join(instance_shapes.SHAPES)
                )
            }
        )


def queue_create(
    *,
    cluster: Cluster,
    key: str,
    description: str = "",
    instance_shape: str = "",
) -> Queue:
    """Create a queue; a queue with an ``instance_shape`` is hosted.

    The cluster row is locked first, so that concurrent creations on one cluster are serialised
    and exactly one of them sees itself as the cluster's first hosted queue and sends
    ``first_hosted_queue_created`` (inside this transaction).
    """
    _validate_instance_shape(instance_shape)
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if cluster.queues.filter(key=key).exists():
            raise ValidationError(
                {"key": f"A queue with key {key!r} already exists in this cluster."}
            )
        first_hosted = bool(instance_shape) and not cluster.queues.hosted().exists()
        queue = Queue(
            cluster=cluster, key=key, description=description, instance_shape=instance_shape
        )
        queue.full_clean()
        try:
            with transaction.atomic():
                queue.save()
        except IntegrityError as exc:  # a database without row locks (SQLite) raced us
            raise ValidationError(
                {"key": f"A queue with key {key!r} already exists in this cluster."}
            ) from exc
        logger.info(
            "queue.created",
            extra={
                "cluster_id": str(cluster.pk),
                "queue_id": str(queue.pk),
                "hosted": queue.hosted,
            },
        )
        if first_hosted:
            first_hosted_queue_created.send(sender=Queue, cluster=cluster, queue=queue)
    return queue


def queue_update(
    *, queue: Queue, description: str | None = None, instance_shape: str | None = None
) -> Queue:
    """Change a queue's description or resize a hosted queue.

    A queue never converts between hosted and self-hosted, and a hosted queue keeps its machine
    type and architecture: only its size may change (as on Buildkite).
    """
    if instance_shape is not None and instance_shape != queue.instance_shape:
        _validate_instance_shape(instance_shape)
        if not queue.hosted or not instance_shape:
            raise ValidationError(
                {"instance_shape": "A queue cannot change between hosted and self-hosted."}
            )
        old, new = instance_shapes.get(queue.instance_shape), instance_shapes.get(instance_shape)
        if (old.machine_type, old.architecture) != (new.machine_type, new.architecture):
            raise ValidationError(
                {
                    "instance_shape": (
                        f"Instance shape cannot be changed to {instance_shape}: only the size "
                        f"of a {old.machine_type}/{old.architecture} queue can change."
                    )
                }
            )
        queue.instance_shape = instance_shape
    if description is not None:
        queue.description = description
    queue.full_clean()
    queue.save(update_fields=["description", "instance_shape"])
    return queue


def agent_token_create(
    *, cluster: Cluster, description: str, expires_at: datetime | None = None
) -> tuple[ClusterAgentToken, str]:
    """Create an agent token. Returns the token and its secret, which is never stored."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "Must be in the future."})
    secret = AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ClusterAgentToken(
        cluster=cluster,
        description=description,
        expires_at=expires_at,
        token_hash=ClusterAgentToken.hash_secret(secret),
        token_prefix=secret[: len(AGENT_TOKEN_PREFIX) + 4],
    )
    token.full_clean()
    token.save()
    logger.info(
        "agent_token.created", extra={"cluster_id": str(cluster.pk), "token_id": str(token.pk)}
    )
    return token, secret


def agent_token_revoke(*, token: ClusterAgentToken) -> ClusterAgentToken:
    """Revoke a token at once; revoking a revoked token changes nothing."""
    ClusterAgentToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db(fields=["revoked_at"])
    logger.info("agent_token.revoked", extra={"token_id": str(token.pk)})
    return token


def agent_environment_set(
    *, cluster: Cluster, name: str, value: str, source: str
) -> AgentEnvironmentVariable:
    """Publish ``name=value`` to every job on the cluster's hosted agents. Idempotent.

    A variable belongs to the ``source`` that first set it; another source may not overwrite it,
    and the platform's own variables (``BUILDKITE_CLUSTER_ID`` and the like) are not settable.
    """
    if name in PLATFORM_VARIABLES:
        raise ValidationError({"name": f"{name} is set by the platform for every job."})
    AgentEnvironmentVariable(cluster=cluster, name=name, value=value, source=source).full_clean(
        validate_constraints=False
    )
    with transaction.atomic():
        variable, created = AgentEnvironmentVariable.objects.select_for_update().get_or_create(
            cluster=cluster, name=name, defaults={"value": value, "source": source}
        )
        if not created:
            if variable.source != source:
                raise ValidationError(
                    {"name": f"{name} is owned by the {variable.source!r} source."}
                )
            if variable.value != value:
                variable.value = value
                variable.updated_at = timezone.now()
                variable.save(update_fields=["value", "updated_at"])
    logger.info(
        "agent_environment.set",
        extra={"cluster_id": str(cluster.pk), "variable": name, "source": source},
    )
    return variable


def agent_environment_unset(*, cluster: Cluster, name: str, source: str) -> bool:
    """Remove a variable that ``source`` set. Returns whether there was one."""
    deleted, _ = AgentEnvironmentVariable.objects.filter(
        cluster=cluster, name=name, source=source
    ).delete()
    return bool(deleted)
