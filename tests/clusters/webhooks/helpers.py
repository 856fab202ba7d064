"""What the webhook tests share: Buildkite-shaped payloads, a delivery as the platform sends
it, the row counts that must not move, and the answers and messages the endpoint gives.
The fixtures (``platform``, ``frozen``) are in this folder's conftest.py."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from django.http import HttpResponse
from django.test import Client

from clusters import webhooks
from clusters.models import Cluster, Organization, Queue, WebhookDelivery, WebhookSecret
from registries.models import Registry

CLUSTER_ID = "3d2e6f4c-6b1e-4f57-9a53-0f1d0b6c2a11"
QUEUE_ID = "9b8f7a2e-51c4-4d0a-8e3b-6f2a1c4d5e77"
SENDER = {"id": "018f2c3a-7b4d-4e5f-8a9b-0c1d2e3f4a5b", "name": "Sam Kim"}
CREATED = "cluster_queue.created"
DELETED = "cluster_queue.deleted"

NO_CREDENTIALS = (
    "Sign the delivery (X-Buildkite-Signature) or send the webhook token (X-Buildkite-Token)."
)
MALFORMED_SIGNATURE = (
    "Malformed X-Buildkite-Signature: expected timestamp=<unix seconds>,"
    "signature=<hex HMAC-SHA256>."
)
NO_DELIVERY_ID = (
    "Send a unique id for the delivery in X-Buildkite-Delivery (1 to 128 letters, digits, '.', "
    "'_', ':' or '-'): retries and replays reuse it."
)
LIMIT_REACHED = "acme already has 2 active webhook secrets; revoke one before adding another."

# --- helpers ------------------------------------------------------------------------------------


def payload(
    event: str = CREATED,
    *,
    org: str = "acme",
    cluster_id: str = CLUSTER_ID,
    cluster_name: str = "Open Source",
    queue_id: str = QUEUE_ID,
    key: str = "linux-small",
    shape: str | None = "LINUX_AMD64_2X4",
    queue: bool = True,
) -> dict[str, Any]:
    """A delivery's body in Buildkite's shapes; ``shape=None`` is a self-hosted queue, and
    ``queue=False`` leaves the queue out (``cluster.deleted``)."""
    body: dict[str, Any] = {
        "event": event,
        "organization": {"slug": org},
        "cluster": {"id": cluster_id, "name": cluster_name, "description": "Open source builds"},
        "sender": dict(SENDER),
    }
    if queue:
        body["queue"] = {
            "id": queue_id,
            "key": key,
            "description": "Hosted Linux",
            "hosted": shape is not None,
            "hosted_agents": {"instance_shape": {"name": shape}} if shape is not None else None,
        }
    return body


_FROM_BODY = object()


def deliver(
    body: dict[str, Any] | list[Any] | bytes,
    *,
    secret: str | None = None,
    token: str | None = None,
    signature: str | None = None,
    timestamp: int | None = None,
    event: object = _FROM_BODY,
    delivery: str | None = "delivery-1",
    org: str = "acme",
    client: Client | None = None,
) -> HttpResponse:
    """POST ``body`` as the platform does: signed with ``secret`` (at ``timestamp``, now by
    default), or with ``token``, or a raw ``signature`` header; ``event`` defaults to the body's
    event and ``None`` leaves a header out."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if event is _FROM_BODY:
        event = body.get("event") if isinstance(body, dict) else None
    headers: dict[str, str] = {}
    if secret is not None:
        stamp = int(time.time()) if timestamp is None else timestamp
        headers[webhooks.SIGNATURE_HEADER] = webhooks.sign(secret, stamp, raw)
    if signature is not None:
        headers[webhooks.SIGNATURE_HEADER] = signature
    if token is not None:
        headers[webhooks.TOKEN_HEADER] = token
    if event is not None:
        headers[webhooks.EVENT_HEADER] = str(event)
    if delivery is not None:
        headers[webhooks.DELIVERY_HEADER] = delivery
    return (client or Client()).post(
        f"/v2/webhooks/buildkite/{org}", raw, content_type="application/json", headers=headers
    )


def counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Cluster, Queue, Registry, WebhookDelivery)
    }


def answer(
    delivery: str, event: str, message: str, *, queue_id: str | None = QUEUE_ID
) -> dict[str, str]:
    """The 200 body of an applied delivery."""
    body = {"delivery_id": delivery, "event": event, "cluster_id": CLUSTER_ID}
    if queue_id is not None:
        body["queue_id"] = queue_id
    return {**body, "message": message}


@dataclass
class Platform:
    """Organization ``acme`` with one active webhook secret."""

    organization: Organization
    row: WebhookSecret
    secret: str
    #: "Now" for the view, once ``frozen`` (below) is used.
    now: int
