"""Applying the platform's webhook deliveries: once each, through the same services as the
API.

A delivery is recorded (``WebhookDelivery``) in the transaction that applies its event, so a
repeated delivery gets the original answer and changes nothing; an operator can replay a
recorded one (``manage.py webhook_replay``).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from clusters import locks
from clusters.models import Cluster, Organization, Queue, WebhookDelivery
from clusters.services.clusters import cluster_create, cluster_delete
from clusters.services.queues import queue_create, queue_delete
from clusters.webhooks.signing import Verified
from controlplane import hotcache

if TYPE_CHECKING:
    from django.db.models import Field

# The logger the webhook's services have always logged under, so their log lines are unchanged.
logger = logging.getLogger("clusters.services")


def webhook_delivery_receive(
    *,
    organization: Organization,
    delivery_id: str,
    payload: dict[str, Any],
    body: bytes,
    data: dict[str, Any],
    verified: Verified,
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
    existing = _recorded(organization.pk, delivery_id, signature)
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
        existing = _recorded(organization.pk, delivery_id, "")
        if existing is None:
            raise
        return _repeated(existing, body_sha256), True
    logger.info(
        "webhook.applied",
        extra={"organization": organization.slug, "delivery_id": delivery_id, "event": event},
    )
    return response, False


def webhook_delivery_repeated(
    *, organization_id: int, delivery_id: str, signature: str | None, body: bytes, event: str | None
) -> bytes | None:
    """The original answer to an exact repeat of a recorded delivery (the same body and event,
    under its delivery id or its signature), rendered as JSON as the REST framework renders it;
    or None. The view asks this first, before the body is parsed or validated: one indexed
    lookup answers a retry, and the process's next retries of it none (``_ANSWERS``). Anything
    else (a new delivery, an id reused for another body or event) is None and goes the whole
    way, which answers it as before.
    """
    signature = signature or ""
    key = (organization_id, delivery_id, signature)
    answer = _ANSWERS.get(key)
    if answer is None:
        since = hotcache.fill_started()
        existing = _recorded(organization_id, delivery_id, signature)
        if existing is None:
            return None
        answer = _Answer(existing.event, existing.body_sha256, _RENDERER.render(existing.response))
        if existing.delivery_id == delivery_id and existing.signature == signature:
            _ANSWERS.put(
                key, answer, since=since, tags=[hotcache.row_tag(Organization, organization_id)]
            )
    if answer.event != event or answer.body_sha256 != hashlib.sha256(body).hexdigest():
        return None
    return answer.rendered


@dataclass(frozen=True, slots=True)
class _Answer:
    """What answering an exact repeat needs of a recorded delivery: what the request must
    match, and the original answer, rendered."""

    event: str
    body_sha256: str
    rendered: bytes


#: Recorded deliveries' answers to their exact repeats, per process, for ``HOT_CACHE_SECONDS``
#: at most (``controlplane.hotcache``): a platform retrying a delivery is answered with no
#: query. Rows are never changed (but for ``replayed_at``), so a process answers a repeat the
#: same from here as from the database. Kept only for a record found under the request's own
#: delivery id (unique: no other row can take it) and its own signature (none for a token): a
#: row recorded later under that signature would have been a repeat of this one instead. A
#: record found under another id or signature is looked up each time, since a row recorded
#: later could be the latest match. Records of an organization changed or deleted in this
#: process go at once; the signature or token is verified before every lookup, so a revoked
#: secret gets nothing more than within the secrets' own bound.
_ANSWERS: hotcache.HotCache[_Answer] = hotcache.HotCache("webhook-answers")
_RENDERER = JSONRenderer()


@dataclass(frozen=True, slots=True)
class Recorded:
    """What answering a repeat needs of a recorded delivery."""

    delivery_id: str
    event: str
    body_sha256: str
    signature: str
    response: dict[str, Any]


def _column(name: str) -> str:
    return str(cast("Field[Any, Any]", WebhookDelivery._meta.get_field(name)).column)


#: The lookup of a recorded delivery, by id or by signature, written out once: a retry is a hot
#: path, and building this statement with the ORM cost more than the rest of its answer. Names
#: come from the model.
_RECORDED = (
    f"SELECT {_column('delivery_id')}, {_column('event')}, {_column('body_sha256')}, "  # noqa: S608 - names from the model
    f"{_column('signature')}, {_column('response')} FROM {WebhookDelivery._meta.db_table} "
    f"WHERE {_column('organization')} = %s AND ({_column('delivery_id')} = %s{{signature}}) "
    f"ORDER BY {_column('received_at')} DESC LIMIT 1"
)
_BY_ID = _RECORDED.format(signature="")
_BY_ID_OR_SIGNATURE = _RECORDED.format(signature=f" OR {_column('signature')} = %s")
_RESPONSE = WebhookDelivery._meta.get_field("response")


def _recorded(organization_id: int, delivery_id: str, signature: str) -> Recorded | None:
    """The organization's recorded delivery with this id, or this signature (the id is not
    signed: a signed delivery re-sent under another id is the same delivery); the latest if two.
    Both are indexed: (organization, delivery id) is unique, the signature has an index."""
    with connection.cursor() as cursor:
        if signature:
            cursor.execute(_BY_ID_OR_SIGNATURE, [organization_id, delivery_id, signature])
        else:
            cursor.execute(_BY_ID, [organization_id, delivery_id])
        row = cursor.fetchone()
    if row is None:
        return None
    response = _RESPONSE.from_db_value(row[4], None, connection)  # type: ignore[arg-type]
    return Recorded(row[0], row[1], row[2], row[3], response)


def _repeated(delivery: Recorded, body_sha256: str) -> dict[str, Any]:
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
    locks.organization_lock(organization.pk)
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
    existing = (
        cluster.queues.filter(Q(pk=payload_queue["id"]) | Q(key=payload_queue["key"])).first()
        if cluster is not None
        else None
    )
    if existing is not None:
        ids["queue_id"] = str(existing.pk)  # by key, it may be another id: say which
    if not _held_by_another_organization(
        organization,
        cluster_id=payload_cluster["id"] if cluster is None else None,
        queue_id=payload_queue["id"] if existing is None else None,
    ):
        return {**ids, "message": _create(organization, cluster, existing, data)}
    # An id another organization holds cannot be taken, and must not be told apart from an id
    # nobody holds (an existence oracle): the creation is rehearsed with fresh ids in a
    # savepoint that is rolled back, so the answer, refusals included, is the one an unknown id
    # gets, and nothing stays (the registry and its message, if any, go with the savepoint).
    try:
        with transaction.atomic():
            raise _Rehearsed(_create(organization, cluster, existing, data, fresh_ids=True))
    except _Rehearsed as rehearsed:
        message = rehearsed.message
    logger.warning(
        "webhook.id_of_another_organization",
        extra={"organization": organization.slug, "cluster_id": ids["cluster_id"],
               "queue_id": ids["queue_id"], "applied": False},
    )  # fmt: skip
    return {**ids, "message": message}


class _Rehearsed(Exception):  # noqa: N818 - not an error: it carries the rehearsal's answer
    """Leaves the savepoint of a rehearsed creation, carrying its answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _held_by_another_organization(
    organization: Organization, *, cluster_id: Any, queue_id: Any
) -> bool:
    """Whether the cluster or queue id a delivery would create with is another organization's."""
    if cluster_id is not None and Cluster.objects.filter(pk=cluster_id).exists():
        return True
    return (
        queue_id is not None
        and Queue.objects.filter(pk=queue_id).exclude(cluster__organization=organization).exists()
    )


def _create(
    organization: Organization,
    cluster: Cluster | None,
    existing: Queue | None,
    data: dict[str, Any],
    *,
    fresh_ids: bool = False,
) -> str:
    """Create what ``cluster_queue.created`` names and this organization lacks; the answer's
    message. ``fresh_ids``: new random ids instead of the payload's (a rehearsal)."""
    payload_cluster, payload_queue = data["cluster"], data["queue"]
    done = []
    if cluster is None:
        cluster = cluster_create(
            organization=organization,
            name=payload_cluster["name"],
            description=payload_cluster.get("description") or "",
            emoji=payload_cluster.get("emoji") or "",
            color=payload_cluster.get("color") or "",
            cluster_id=uuid.uuid4() if fresh_ids else payload_cluster["id"],
        )
        done.append(f"cluster {cluster.name!r}")
    if existing is None:
        # ``hosted`` decides, as on Buildkite; hosted_agents of a self-hosted queue are ignored.
        hosted_agents = (
            (payload_queue.get("hosted_agents") or {}) if payload_queue["hosted"] else {}
        )
        queue_create(
            cluster=cluster,
            key=payload_queue["key"],
            description=payload_queue.get("description") or "",
            instance_shape=hosted_agents.get("instance_shape", {}).get("name", ""),
            queue_id=uuid.uuid4() if fresh_ids else payload_queue["id"],
        )
        done.append(f"queue {payload_queue['key']!r}")
    return f"Created {' and '.join(done)}." if done else "The queue already existed."
