"""Writes to organizations, clusters, queues, agent tokens and the agent environment.

Every entry point (API, admin, webhook, demo, management commands) creates and changes these
through the functions here, never by saving models itself, so that the checks and the signals
happen once, in one place.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from clusters import instance_shapes, webhooks
from clusters.models import (
    AgentEnvironmentVariable,
    ApiToken,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
    RetryAgentAffinity,
    WebhookDelivery,
    WebhookSecret,
)
from clusters.selectors import PLATFORM_VARIABLES
from clusters.signals import cluster_deleted, first_hosted_queue_created

logger = logging.getLogger(__name__)

#: Names no source may publish into a job environment: those buildkite-agent protects from job
#: environments (its env/protected.go), and those that change how processes and shells run.
RESERVED_VARIABLES = frozenset(
    {
        "BUILDKITE_BIN_PATH",
        "BUILDKITE_BUILD_PATH",
        "BUILDKITE_COMMAND_EVAL",
        "BUILDKITE_CONFIG_PATH",
        "BUILDKITE_GIT_MIRRORS_PATH",
        "BUILDKITE_HOOKS_PATH",
        "BUILDKITE_LOCAL_HOOKS_ENABLED",
        "BUILDKITE_PLUGINS_ENABLED",
        "BUILDKITE_PLUGINS_PATH",
        "BUILDKITE_SHELL",
        "BASH_ENV",
        "BASHOPTS",
        "CDPATH",
        "ENV",
        "GLOBIGNORE",
        "HOME",
        "IFS",
        "LD_AUDIT",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "PATH",
        "PROMPT_COMMAND",
        "PS4",
        "SHELL",
        "SHELLOPTS",
    }
)

AGENT_TOKEN_PREFIX = "bkct_"  # noqa: S105 - a marker for secret scanners, not a secret
API_TOKEN_PREFIX = "bkua_"  # noqa: S105 - the same, for API access tokens


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
    created_by: User | None = None,
    cluster_id: uuid.UUID | None = None,
) -> Cluster:
    """Create a cluster; ``cluster_id`` keeps the id another part of the platform gave it."""
    cluster = Cluster(
        pk=cluster_id or uuid.uuid4(),
        organization=organization,
        name=name,
        description=description,
        emoji=emoji,
        color=color,
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
    _insert_or_explain(cluster, duplicate=duplicate, create=create)


def _insert_or_explain(
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
    default_queue: Queue | None | _Unset = UNSET,
) -> Cluster:
    """Change what was given; ``default_queue=None`` clears the default queue, which must
    otherwise be one of this cluster's queues."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        changes = {"name": name, "description": description, "emoji": emoji, "color": color}
        for field, value in changes.items():
            if value is not None:
                setattr(cluster, field, value)
        if not isinstance(default_queue, _Unset):
            cluster.default_queue = default_queue
        _save_cluster(cluster)
    return cluster


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
    """
    if error := _unknown_shape_error(instance_shape):
        raise ValidationError({"instance_shape": error})
    duplicate = ValidationError(
        {"key": f"A queue with key {key!r} already exists in this cluster."}
    )
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if cluster.queues.filter(key=key).exists():
            raise duplicate
        first_hosted = bool(instance_shape) and not cluster.queues.hosted().exists()
        queue = Queue(
            pk=queue_id or uuid.uuid4(),
            cluster=cluster,
            key=key,
            description=description,
            instance_shape=instance_shape,
            retry_agent_affinity=retry_agent_affinity,
            created_by=created_by,
        )
        # Uniqueness was checked just above, under the lock, with a message naming the field;
        # the field validators cover what the check constraints say.
        queue.full_clean(validate_constraints=False)
        _insert_or_explain(queue, duplicate=duplicate)
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


def queue_delete(*, queue: Queue) -> None:
    """Delete a queue. If it was the cluster's default queue, the cluster has none afterwards.

    Deleting a cluster's last hosted queue leaves its registry as it is: images are the
    cluster's, not the queue's (see docs/architecture.md, "Registry lifecycle").
    """
    with transaction.atomic():
        Cluster.objects.select_for_update().filter(pk=queue.cluster_id).first()
        queue.delete()
    logger.info(
        "queue.deleted", extra={"cluster_id": str(queue.cluster_id), "queue_id": str(queue.pk)}
    )


def cluster_delete(*, cluster: Cluster) -> None:
    """Delete a cluster with its queues, agent tokens and agent environment, as Buildkite does.

    ``cluster_deleted`` is sent first, in the same transaction, so that other apps release what
    they keep of the cluster; the registry app starts deprovisioning its registry.
    """
    cluster_id = cluster.pk
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().filter(pk=cluster_id).first()
        if locked is None:
            return
        cluster_deleted.send(sender=Cluster, cluster=locked)
        locked.delete()
    logger.info("cluster.deleted", extra={"cluster_id": str(cluster_id)})


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
        queue = Queue.objects.select_for_update().get(pk=queue.pk)
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
        queue = Queue.objects.select_for_update().get(pk=queue.pk)
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
    event = "queue.dispatch_paused" if paused else "queue.dispatch_resumed"
    logger.info(event, extra={"queue_id": str(queue.pk)})
    return queue


def _new_secret(prefix: str) -> str:
    """A secret shown once: ``prefix`` (so that secret scanners recognise it) and 256 random
    bits."""
    return prefix + secrets.token_urlsafe(32)


def _shown_prefix(secret: str, prefix: str) -> str:
    """What is kept of a secret to tell it apart in lists: its prefix and four characters."""
    return secret[: len(prefix) + 4]


def agent_token_create(
    *,
    cluster: Cluster,
    description: str,
    expires_at: datetime | None = None,
    created_by: User | None = None,
) -> tuple[ClusterAgentToken, str]:
    """Create an agent token. Returns the token and its secret, which is never stored."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "Must be in the future."})
    secret = _new_secret(AGENT_TOKEN_PREFIX)
    token = ClusterAgentToken(
        cluster=cluster,
        description=description,
        expires_at=expires_at,
        token_hash=ClusterAgentToken.hash_secret(secret),
        token_prefix=_shown_prefix(secret, AGENT_TOKEN_PREFIX),
        created_by=created_by,
    )
    token.full_clean()
    token.save()
    logger.info(
        "agent_token.created", extra={"cluster_id": str(cluster.pk), "token_id": str(token.pk)}
    )
    return token, secret


def agent_token_update(*, token: ClusterAgentToken, description: str) -> ClusterAgentToken:
    """Change a token's description. Its secret and expiry never change."""
    token.description = description
    token.full_clean()
    token.save(update_fields=["description"])
    return token


def agent_token_revoke(*, token: ClusterAgentToken) -> ClusterAgentToken:
    """Revoke a token at once; revoking a revoked token changes nothing."""
    return _revoke(token, "agent_token.revoked", "token_id")


Revocable = TypeVar("Revocable", ClusterAgentToken, ApiToken, WebhookSecret)


def _revoke(obj: Revocable, event: str, id_name: str) -> Revocable:
    """Set ``revoked_at`` once, atomically (a second revocation keeps the first time)."""
    type(obj).objects.filter(pk=obj.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    obj.refresh_from_db(fields=["revoked_at"])
    logger.info(event, extra={id_name: str(obj.pk)})
    return obj


def agent_environment_set(
    *, cluster: Cluster, name: str, value: str, source: str
) -> AgentEnvironmentVariable:
    """Publish ``name=value`` to every job on the cluster's hosted agents. Idempotent.

    A variable belongs to the ``source`` that first set it; another source may not overwrite it.
    Reserved names (``RESERVED_VARIABLES``, ``BUILDKITE_AGENT_*``) are refused.
    """
    if name in PLATFORM_VARIABLES:
        raise ValidationError({"name": f"{name} is set by the platform for every job."})
    if name in RESERVED_VARIABLES or name.startswith("BUILDKITE_AGENT_"):
        raise ValidationError({"name": f"{name} is reserved: jobs must not receive it from here."})
    if "\x00" in value:
        raise ValidationError({"value": "Must not contain NUL characters."})
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


def api_token_create(
    *, user: User, organization: Organization, description: str, scopes: list[str]
) -> tuple[ApiToken, str]:
    """Create a REST API access token. Returns the token and its secret, which is never stored."""
    secret = _new_secret(API_TOKEN_PREFIX)
    token = ApiToken(
        user=user,
        organization=organization,
        description=description,
        scopes=list(dict.fromkeys(scopes)),
        token_hash=ApiToken.hash_secret(secret),
        token_prefix=_shown_prefix(secret, API_TOKEN_PREFIX),
    )
    token.full_clean()
    token.save()
    logger.info(
        "api_token.created",
        extra={"token_id": str(token.pk), "organization": organization.slug, "user_id": user.pk},
    )
    return token, secret


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke an API token at once; revoking a revoked token changes nothing."""
    return _revoke(token, "api_token.revoked", "token_id")


# --- webhooks -------------------------------------------------------------------------------

MAX_ACTIVE_WEBHOOK_SECRETS = 2


def webhook_secret_create(
    *, organization: Organization, description: str
) -> tuple[WebhookSecret, str]:
    """A new webhook secret for the organization; returns it and the secret, shown once.

    At most two are active at a time: add the new one, switch the platform to it, then revoke
    the old one, and no delivery is refused on the way.
    """
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if error := webhook_secret_limit_error(organization):
            raise ValidationError(error)
        salt = webhooks.new_salt()
        secret = webhooks.secret_for(salt)
        webhook_secret = WebhookSecret(
            organization=organization,
            description=description,
            salt=salt,
            secret_prefix=_shown_prefix(secret, webhooks.SECRET_PREFIX),
        )
        webhook_secret.full_clean()
        webhook_secret.save()
    logger.info(
        "webhook_secret.created",
        extra={"secret_id": str(webhook_secret.pk), "organization": organization.slug},
    )
    return webhook_secret, secret


def webhook_secret_limit_error(organization: Organization) -> str | None:
    """Why the organization cannot have another webhook secret now, or None if it can."""
    active = WebhookSecret.objects.active().filter(organization=organization).count()
    if active < MAX_ACTIVE_WEBHOOK_SECRETS:
        return None
    return (
        f"{organization.slug} already has {active} active webhook secrets; revoke one before "
        "adding another."
    )


def webhook_secret_revoke(*, secret: WebhookSecret) -> WebhookSecret:
    """Stop accepting deliveries signed with this secret, at once."""
    return _revoke(secret, "webhook_secret.revoked", "secret_id")


def webhook_delivery_receive(
    *,
    organization: Organization,
    delivery_id: str,
    payload: dict[str, Any],
    body: bytes,
    data: dict[str, Any],
    verified: webhooks.Verified,
) -> tuple[dict[str, Any], bool]:
    """Apply a verified delivery once. Returns the answer, and whether it had been applied
    before (then the answer is the original one and nothing is applied again).

    The delivery row is inserted first, in the transaction that applies the event, under the
    unique (organization, delivery id) constraint: a concurrent copy of the delivery waits on
    that insert, then finds the row. An event that fails validation rolls back both. The
    delivery id is not signed, so a signed delivery seen before under another id is a repeat
    too (a captured delivery re-sent with a new id within the signature's five minutes).
    """
    event = data["event"]
    body_sha256 = hashlib.sha256(body).hexdigest()
    signature = verified.signature or ""
    seen = Q(delivery_id=delivery_id) | (Q(signature=signature) if signature else Q(pk=None))
    existing = WebhookDelivery.objects.filter(seen, organization=organization).first()
    if existing is not None:
        return _repeated(existing, body_sha256), True
    started = time.monotonic()
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                organization=organization,
                delivery_id=delivery_id,
                event=event,
                payload=payload,
                body_sha256=body_sha256,
                signature=signature,
                response={},
                verified_by=verified.method,
                secret=verified.secret,
                duration=timedelta(0),
            )
            response = {
                "delivery_id": delivery_id,
                "event": event,
                **_webhook_event_apply(organization, data),
            }
            delivery.response = response
            delivery.duration = timedelta(seconds=time.monotonic() - started)
            delivery.save(update_fields=["response", "duration"])
    except IntegrityError:
        existing = WebhookDelivery.objects.filter(
            organization=organization, delivery_id=delivery_id
        ).first()
        if existing is None:
            raise
        return _repeated(existing, body_sha256), True
    logger.info(
        "webhook.applied",
        extra={"organization": organization.slug, "delivery_id": delivery_id, "event": event},
    )
    return response, False


def _repeated(delivery: WebhookDelivery, body_sha256: str) -> dict[str, Any]:
    """The original answer to a repeated delivery; another body under the same delivery id is
    refused (an id names one delivery). Bodies are compared byte for byte, by hash."""
    if delivery.body_sha256 != body_sha256:
        raise ValidationError(
            {"X-Buildkite-Delivery": f"{delivery.delivery_id!r} was already used for a different "
             "delivery; each delivery needs its own id."}
        )  # fmt: skip
    return dict(delivery.response)


def webhook_delivery_replay(*, delivery: WebhookDelivery, data: dict[str, Any]) -> dict[str, Any]:
    """Apply a recorded delivery's event again (``data``: its payload, validated again). The
    events are idempotent, so this only redoes what is missing."""
    with transaction.atomic():
        outcome = _webhook_event_apply(delivery.organization, data)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(replayed_at=timezone.now())
    logger.info("webhook.replayed", extra={"delivery_id": delivery.delivery_id})
    return {"delivery_id": delivery.delivery_id, "event": delivery.event, **outcome}


def _webhook_event_apply(organization: Organization, data: dict[str, Any]) -> dict[str, Any]:
    """Apply one event through the same services as the API. Each is idempotent: what exists
    already is left as it is, what is gone already is not an error."""
    event = data["event"]
    # One event of an organization at a time: two deliveries about one new cluster must not
    # both try to create it.
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    if data["organization"]["slug"] != organization.slug:
        raise ValidationError(
            {"organization": f"The delivery is for {data['organization']['slug']!r}, but was "
             f"sent to the webhook of {organization.slug!r}."}
        )  # fmt: skip
    payload_cluster = data["cluster"]
    cluster = Cluster.objects.filter(organization=organization, pk=payload_cluster["id"]).first()
    ids = {"cluster_id": str(payload_cluster["id"])}
    if event == "cluster.deleted":
        if cluster is None:
            return {**ids, "message": "The cluster was already gone."}
        cluster_delete(cluster=cluster)
        return {**ids, "message": f"Deleted cluster {cluster.name!r}; its registry is being "
                "deprovisioned."}  # fmt: skip
    payload_queue = data["queue"]
    ids["queue_id"] = str(payload_queue["id"])
    if event == "cluster_queue.deleted":
        queue = cluster.queues.filter(pk=payload_queue["id"]).first() if cluster else None
        if queue is None:
            return {**ids, "message": "The queue was already gone."}
        queue_delete(queue=queue)
        return {**ids, "message": f"Deleted queue {queue.key!r}."}
    # cluster_queue.created
    done = []
    if cluster is None:
        cluster = cluster_create(
            organization=organization,
            name=payload_cluster["name"],
            description=payload_cluster.get("description") or "",
            emoji=payload_cluster.get("emoji") or "",
            color=payload_cluster.get("color") or "",
            cluster_id=payload_cluster["id"],
        )
        done.append(f"cluster {cluster.name!r}")
    existing = cluster.queues.filter(
        Q(pk=payload_queue["id"]) | Q(key=payload_queue["key"])
    ).first()
    if existing is not None:
        ids["queue_id"] = str(existing.pk)  # by key, it may be another id: say which
    else:
        # ``hosted`` decides, as on Buildkite; hosted_agents of a self-hosted queue are ignored.
        hosted_agents = (
            (payload_queue.get("hosted_agents") or {}) if payload_queue["hosted"] else {}
        )
        queue_create(
            cluster=cluster,
            key=payload_queue["key"],
            description=payload_queue.get("description") or "",
            instance_shape=hosted_agents.get("instance_shape", {}).get("name", ""),
            queue_id=payload_queue["id"],
        )
        done.append(f"queue {payload_queue['key']!r}")
    message = f"Created {' and '.join(done)}." if done else "The queue already existed."
    return {**ids, "message": message}
