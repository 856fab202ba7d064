"""The platform's signed webhook, ``POST /v2/webhooks/buildkite/<org>``.

A verified delivery is applied once, through the same services as the API; every refusal has
its exact status and JSON body and writes nothing; secrets rotate without downtime; deliveries
are visible in the admin and can be replayed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.http import HttpResponse
from django.test import Client

from clusters import instance_shapes, services, webhooks
from clusters.models import Cluster, Organization, Queue, WebhookDelivery, WebhookSecret
from registries.models import Registry, State
from registries.services import registry_provision

pytestmark = pytest.mark.django_db

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


@pytest.fixture
def platform() -> Platform:
    organization = services.organization_create(slug="acme", name="Acme")
    row, secret = services.webhook_secret_create(organization=organization, description="platform")
    return Platform(organization, row, secret, now=int(time.time()))


@pytest.fixture
def frozen(platform: Platform, monkeypatch) -> Platform:
    """The view's clock stopped at ``platform.now``, so that timestamps are exact to the second."""
    monkeypatch.setattr("clusters.views.time", SimpleNamespace(time=lambda: float(platform.now)))
    return platform


# --- a valid delivery ---------------------------------------------------------------------------


def test_a_signed_queue_creation_for_an_unknown_cluster_creates_both_with_the_payloads_ids(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue
) -> None:
    body = payload()

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(body, secret=platform.secret)

    assert response.status_code == 200
    assert response.json() == answer(
        "delivery-1", CREATED, "Created cluster 'Open Source' and queue 'linux-small'."
    )
    assert response["X-Delivery-Repeated"] == "false"
    cluster = Cluster.objects.get()
    assert (str(cluster.pk), cluster.organization, cluster.name, cluster.description) == (
        CLUSTER_ID, platform.organization, "Open Source", "Open source builds",
    )  # fmt: skip
    queue = Queue.objects.get()
    assert (str(queue.pk), queue.cluster, queue.key, queue.instance_shape, queue.description) == (
        QUEUE_ID, cluster, "linux-small", "LINUX_AMD64_2X4", "Hosted Linux",
    )  # fmt: skip
    registry = Registry.objects.get()
    assert (registry.cluster, registry.state) == (cluster, State.PENDING)
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]
    delivery = WebhookDelivery.objects.get()
    assert (
        delivery.organization, delivery.delivery_id, delivery.event, delivery.verified_by,
        delivery.secret, delivery.payload, delivery.response, delivery.replayed_at,
    ) == (
        platform.organization, "delivery-1", CREATED, "signature", platform.row, body,
        response.json(), None,
    )  # fmt: skip
    assert delivery.duration.total_seconds() >= 0


def test_a_self_hosted_queue_creation_owes_no_registry(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(payload(key="on-prem", shape=None), secret=platform.secret)

    assert response.status_code == 200
    assert response.json()["message"] == "Created cluster 'Open Source' and queue 'on-prem'."
    assert Queue.objects.get().instance_shape == ""
    assert Registry.objects.count() == 0
    assert broker_queue.drain() == []


def test_the_token_mode_is_accepted_too(platform: Platform) -> None:
    response = deliver(payload(), token=platform.secret)

    assert response.status_code == 200
    assert response.json() == answer(
        "delivery-1", CREATED, "Created cluster 'Open Source' and queue 'linux-small'."
    )
    delivery = WebhookDelivery.objects.get()
    assert (delivery.verified_by, delivery.secret) == ("token", platform.row)
    assert str(Queue.objects.get().pk) == QUEUE_ID


def test_a_queue_created_in_a_known_cluster_keeps_the_cluster(platform: Platform) -> None:
    cluster = services.cluster_create(
        organization=platform.organization, name="Renamed here", cluster_id=uuid.UUID(CLUSTER_ID)
    )

    response = deliver(payload(), secret=platform.secret)

    assert response.status_code == 200
    assert response.json()["message"] == "Created queue 'linux-small'."
    cluster.refresh_from_db()
    assert cluster.name == "Renamed here"
    assert Queue.objects.get().cluster == cluster


# --- idempotency --------------------------------------------------------------------------------


def test_a_repeated_delivery_gets_the_original_answer_and_applies_nothing_again(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue
) -> None:
    body = payload()
    with django_capture_on_commit_callbacks(execute=True):
        first = deliver(body, secret=platform.secret)
        repeated = deliver(body, secret=platform.secret)

    assert first.status_code == repeated.status_code == 200
    assert repeated.json() == first.json()
    assert (first["X-Delivery-Repeated"], repeated["X-Delivery-Repeated"]) == ("false", "true")
    assert counts() == {"Cluster": 1, "Queue": 1, "Registry": 1, "WebhookDelivery": 1}
    assert broker_queue.drain() == [("registries.provision", (str(Registry.objects.get().pk),))]

    # An id names one delivery: another body under it is refused, and nothing is applied.
    with django_capture_on_commit_callbacks(execute=True):
        changed = deliver(payload(queue_id=str(uuid.uuid4()), key="other"), token=platform.secret)
    reused = (
        "'delivery-1' was already used for a different delivery; each delivery needs its own id"
    )
    assert changed.status_code == 422
    assert changed.json() == {
        "message": f"Validation failed: X-Buildkite-Delivery {reused}",
        "errors": [{"field": "X-Buildkite-Delivery", "message": f"{reused}."}],
    }
    assert counts() == {"Cluster": 1, "Queue": 1, "Registry": 1, "WebhookDelivery": 1}
    assert broker_queue.drain() == []

    # Another id with the same content, dispatched (signed) at another time, is a new delivery,
    # which finds the queue there.
    with django_capture_on_commit_callbacks(execute=True):
        again = deliver(
            body, secret=platform.secret, delivery="delivery-2", timestamp=int(time.time()) - 10
        )
    assert again.status_code == 200
    assert again.json() == answer("delivery-2", CREATED, "The queue already existed.")
    assert again["X-Delivery-Repeated"] == "false"
    assert counts() == {"Cluster": 1, "Queue": 1, "Registry": 1, "WebhookDelivery": 2}
    assert broker_queue.drain() == []


# --- refusals -----------------------------------------------------------------------------------

WRONG_SECRET = webhooks.SECRET_PREFIX + "0" * 48


STALE = (
    "The signature's timestamp is 301 seconds away from now; deliveries more than 300 seconds "
    "old (or ahead) are refused."
)


def _shape_error() -> str:
    shapes = ", ".join(instance_shapes.SHAPES)
    return f"'NOT_A_SHAPE' is not a known instance shape; use one of {shapes}"


# fmt: off
REFUSALS = [
    # 401: who sent it
    pytest.param(
        lambda p: deliver(payload()), 401, NO_CREDENTIALS, id="no signature and no token"
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=WRONG_SECRET), 401, "Invalid signature.",
        id="signed with another secret",
    ),
    pytest.param(
        lambda p: deliver(
            payload(key="tampered"),
            signature=webhooks.sign(p.secret, p.now, json.dumps(payload()).encode()),
        ),
        401, "Invalid signature.", id="signature of another body",
    ),
    pytest.param(
        lambda p: deliver(payload(), signature="sha256=" + "a" * 64), 401, MALFORMED_SIGNATURE,
        id="malformed signature header",
    ),
    pytest.param(
        lambda p: deliver(
            payload(), signature=f"timestamp={p.now},signature={'A' * 64}"
        ),
        401, MALFORMED_SIGNATURE, id="upper-case hex signature",
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, timestamp=p.now - 301),
        401, STALE, id="timestamp 301 s in the past",
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, timestamp=p.now + 301),
        401, STALE, id="timestamp 301 s in the future",
    ),
    pytest.param(
        lambda p: deliver(payload(), token=WRONG_SECRET), 401, "Invalid token.", id="wrong token"
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=WRONG_SECRET, token=p.secret), 401,
        "Invalid signature.", id="bad signature with a good token",
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, org="globex"), 401, "Invalid signature.",
        id="unknown organization, signed",
    ),
    pytest.param(
        lambda p: deliver(payload(), token=p.secret, org="globex"), 401, "Invalid token.",
        id="unknown organization, token",
    ),
    pytest.param(
        lambda p: (
            services.webhook_secret_revoke(secret=p.row),
            deliver(payload(), secret=p.secret),
        )[1],
        401, "Invalid signature.", id="revoked secret",
    ),
    # 400: what was sent
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, delivery=None), 400, NO_DELIVERY_ID,
        id="no delivery id",
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, delivery="   "), 400, NO_DELIVERY_ID,
        id="blank delivery id",
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, delivery="d" * 129), 400, NO_DELIVERY_ID,
        id="delivery id of 129 characters",
    ),
    pytest.param(
        lambda p: deliver(b'{"event": ', secret=p.secret, event=CREATED), 400,
        "The body is not JSON: Expecting value: line 1 column 11 (char 10).",
        id="malformed JSON",
    ),
    pytest.param(
        lambda p: deliver(b"", secret=p.secret, event=CREATED), 400,
        "The body is not JSON: Expecting value: line 1 column 1 (char 0).", id="empty body",
    ),
    pytest.param(
        lambda p: deliver(b'{"event": "\xff"}', secret=p.secret, event=CREATED), 400,
        "The body is not JSON: 'utf-8' codec can't decode byte 0xff in position 11: invalid "
        "start byte.",
        id="not UTF-8",
    ),
    pytest.param(
        lambda p: deliver([payload()], secret=p.secret, event=CREATED), 400,
        "The body is not JSON: it must be a JSON object.", id="a JSON array",
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, event="cluster_queue.deleted"), 400,
        "X-Buildkite-Event ('cluster_queue.deleted') does not agree with the body's event "
        "('cluster_queue.created').",
        id="event header disagrees with the body",
    ),
    pytest.param(
        lambda p: deliver(payload(), secret=p.secret, event=None), 400,
        "X-Buildkite-Event (None) does not agree with the body's event ('cluster_queue.created').",
        id="no event header",
    ),
    pytest.param(
        lambda p: deliver(payload("cluster.created"), secret=p.secret), 400,
        "Unknown event 'cluster.created': this endpoint applies cluster_queue.created, "
        "cluster_queue.deleted, cluster.deleted (and answers ping).",
        id="unknown event",
    ),
    pytest.param(
        lambda p: deliver({k: v for k, v in payload().items() if k != "event"}, secret=p.secret),
        400,
        "Unknown event None: this endpoint applies cluster_queue.created, "
        "cluster_queue.deleted, cluster.deleted (and answers ping).",
        id="no event at all",
    ),
]
# fmt: on


@pytest.mark.parametrize(("send", "status", "message"), REFUSALS)
def test_a_refused_delivery_gets_its_exact_answer_and_writes_nothing(
    frozen: Platform, django_capture_on_commit_callbacks, broker_queue, send, status, message
) -> None:
    before = counts()

    with django_capture_on_commit_callbacks(execute=True):
        response = send(frozen)

    assert response.status_code == status
    assert response.json() == {"message": message}
    assert counts() == before
    assert broker_queue.drain() == []


@pytest.mark.parametrize("offset", [-300, 300])
def test_a_timestamp_300_seconds_away_is_still_accepted(frozen: Platform, offset: int) -> None:
    response = deliver(payload(), secret=frozen.secret, timestamp=frozen.now + offset)

    assert response.status_code == 200
    assert response.json()["message"] == "Created cluster 'Open Source' and queue 'linux-small'."


def invalid_hosted_queue() -> dict[str, Any]:
    body = payload()
    body["queue"]["hosted_agents"] = None
    return body


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    node = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return body


INVALID = [
    pytest.param(
        payload(key="linux small"),
        [{"field": "queue.key", "message": "This value does not match the required pattern."}],
        id="queue key with a space",
    ),
    pytest.param(
        invalid_hosted_queue(),
        [
            {
                "field": "queue.hosted_agents",
                "message": "A hosted queue needs hosted_agents.instance_shape.",
            }
        ],
        id="hosted queue without hosted_agents",
    ),  # fmt: skip
    pytest.param(
        payload(shape="NOT_A_SHAPE"),
        [{"field": "instance_shape", "message": _shape_error()}],
        id="unknown instance shape (from the service)",
    ),
    pytest.param(
        payload(org="globex"),
        [
            {
                "field": "organization",
                "message": "The delivery is for 'globex', but was sent to the webhook of 'acme'.",
            }
        ],
        id="organization slug differs from the URL's",
    ),  # fmt: skip
    pytest.param(
        payload(cluster_id="not-a-uuid"),
        [{"field": "cluster.id", "message": "Must be a valid UUID."}],
        id="cluster id not a UUID",
    ),
    pytest.param(
        without(payload(), "queue"),
        [{"field": "queue", "message": "This field is required."}],
        id="no queue",
    ),
    pytest.param(
        without(payload(), "cluster", "name"),
        [{"field": "cluster.name", "message": "This field is required."}],
        id="no cluster name",
    ),
]


@pytest.mark.parametrize(("body", "errors"), INVALID)
def test_a_payload_failing_validation_is_422_and_writes_nothing(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue, body, errors
) -> None:
    before = counts()

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(body, secret=platform.secret)

    assert response.status_code == 422
    parts = [f"{e['field']} {e['message'][:1].lower()}{e['message'][1:]}" for e in errors]
    message = "Validation failed: " + "; ".join(part.rstrip(".") for part in parts)
    assert response.json() == {"message": message, "errors": errors}
    assert counts() == before
    assert broker_queue.drain() == []


def test_a_ping_is_answered_pong_and_applies_nothing(platform: Platform) -> None:
    before = counts()

    response = deliver({"event": "ping", "organization": {"slug": "acme"}}, token=platform.secret)

    assert response.status_code == 200
    assert response.json() == {"message": "pong"}
    assert counts() == before


def test_a_body_over_the_size_limit_is_413_before_anything_else(
    platform: Platform, settings
) -> None:
    settings.API_MAX_BODY_BYTES = 200
    body = payload()
    size = len(json.dumps(body).encode())
    assert size > 200
    before = counts()

    response = deliver(body, secret=platform.secret)

    assert response.status_code == 413
    assert response.json() == {
        "message": f"The request body is {size} bytes; the limit is 200 bytes."
    }
    assert counts() == before
    # Also unsigned: the size is checked first.
    assert deliver(body).status_code == 413


# --- rotation -----------------------------------------------------------------------------------


def test_a_secret_rotates_without_refusing_a_delivery(platform: Platform) -> None:
    old_row, old = platform.row, platform.secret
    new_row, new = services.webhook_secret_create(
        organization=platform.organization, description="rotated"
    )

    during = [
        deliver(payload(queue_id=str(uuid.uuid4()), key=f"q-{name}"), delivery=f"d-{name}", **kw)
        for name, kw in [
            ("old-signed", {"secret": old}), ("new-signed", {"secret": new}),
            ("old-token", {"token": old}), ("new-token", {"token": new}),
        ]
    ]  # fmt: skip
    assert [response.status_code for response in during] == [200, 200, 200, 200]
    by_delivery = dict(WebhookDelivery.objects.values_list("delivery_id", "secret"))
    assert by_delivery == {
        "d-old-signed": old_row.pk, "d-new-signed": new_row.pk,
        "d-old-token": old_row.pk, "d-new-token": new_row.pk,
    }  # fmt: skip

    with pytest.raises(ValidationError) as refused:
        services.webhook_secret_create(organization=platform.organization, description="third")
    assert refused.value.messages == [LIMIT_REACHED]
    assert WebhookSecret.objects.count() == 2

    services.webhook_secret_revoke(secret=old_row)
    before = counts()
    late = payload(queue_id=str(uuid.uuid4()), key="late")
    after_signed = deliver(late, secret=old, delivery="late")
    after_token = deliver(late, token=old, delivery="late")
    assert after_signed.status_code == 401
    assert after_signed.json() == {"message": "Invalid signature."}
    assert after_token.status_code == 401
    assert after_token.json() == {"message": "Invalid token."}
    assert counts() == before
    current = deliver(late, secret=new, delivery="late")
    assert current.status_code == 200
    assert current.json()["message"] == "Created queue 'late'."

    # With the old one revoked there is room for the next rotation.
    services.webhook_secret_create(organization=platform.organization, description="next")


# --- deletions ----------------------------------------------------------------------------------


def test_a_queue_deletion_deletes_the_queue_and_a_second_one_finds_it_gone(
    platform: Platform,
) -> None:
    assert deliver(payload(), secret=platform.secret, delivery="create").status_code == 200
    body = payload(DELETED)

    response = deliver(body, secret=platform.secret, delivery="delete")

    assert response.status_code == 200
    assert response.json() == answer("delete", DELETED, "Deleted queue 'linux-small'.")
    assert Queue.objects.count() == 0
    assert str(Cluster.objects.get().pk) == CLUSTER_ID
    assert Registry.objects.get().cluster_id == uuid.UUID(CLUSTER_ID)  # images are the cluster's

    again = deliver(
        body, secret=platform.secret, delivery="delete-again", timestamp=int(time.time()) - 10
    )
    assert again.status_code == 200
    assert again.json() == answer("delete-again", DELETED, "The queue was already gone.")
    assert WebhookDelivery.objects.count() == 3


def test_a_cluster_deletion_deletes_the_cluster_and_deprovisions_its_registry(
    platform: Platform, registry_settings, django_capture_on_commit_callbacks, broker_queue
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(payload(), secret=platform.secret, delivery="create").status_code == 200
    registry = Registry.objects.get()
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]
    assert registry_provision(registry_id=registry.pk).state == State.READY  # as the worker does
    broker_queue.drain()
    body = payload("cluster.deleted", queue=False)

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(body, secret=platform.secret, delivery="delete")

    assert response.status_code == 200
    assert response.json() == answer(
        "delete", "cluster.deleted",
        "Deleted cluster 'Open Source'; its registry is being deprovisioned.", queue_id=None,
    )  # fmt: skip
    assert (Cluster.objects.count(), Queue.objects.count()) == (0, 0)
    registry.refresh_from_db()
    assert (registry.state, registry.cluster_id) == (State.DEPROVISIONING, None)
    assert broker_queue.drain() == [("registries.deprovision", (str(registry.pk),))]

    with django_capture_on_commit_callbacks(execute=True):
        again = deliver(
            body, secret=platform.secret, delivery="delete-again", timestamp=int(time.time()) - 10
        )
    assert again.status_code == 200
    assert again.json() == answer(
        "delete-again", "cluster.deleted", "The cluster was already gone.", queue_id=None
    )
    assert broker_queue.drain() == []


# --- other organizations ------------------------------------------------------------------------


def test_a_cluster_id_of_another_organization_is_refused_and_left_as_it_is(
    platform: Platform,
) -> None:
    globex = services.organization_create(slug="globex", name="Globex")
    theirs = services.cluster_create(
        organization=globex,
        name="Theirs",
        description="Not yours",
        cluster_id=uuid.UUID(CLUSTER_ID),
    )
    before = counts()

    response = deliver(payload(), secret=platform.secret)

    assert response.status_code == 422
    assert response.json() == {
        "message": "Validation failed: id cluster with this Id already exists",
        "errors": [{"field": "id", "message": "Cluster with this Id already exists."}],
    }
    assert counts() == before
    theirs.refresh_from_db()
    assert (theirs.organization, theirs.name, theirs.description) == (globex, "Theirs", "Not yours")
    assert not theirs.queues.exists()


def test_a_queue_id_of_another_organization_is_refused_and_left_as_it_is(
    platform: Platform,
) -> None:
    globex = services.organization_create(slug="globex", name="Globex")
    theirs = services.cluster_create(organization=globex, name="Theirs")
    their_queue = services.queue_create(cluster=theirs, key="theirs", queue_id=uuid.UUID(QUEUE_ID))
    before = counts()

    response = deliver(payload(), secret=platform.secret)

    assert response.status_code == 422
    assert response.json()["message"].startswith("Validation failed: id ")
    assert counts() == before
    their_queue.refresh_from_db()
    assert (their_queue.cluster, their_queue.key) == (theirs, "theirs")


def test_deletions_never_reach_another_organizations_cluster(platform: Platform) -> None:
    globex = services.organization_create(slug="globex", name="Globex")
    theirs = services.cluster_create(
        organization=globex, name="Theirs", cluster_id=uuid.UUID(CLUSTER_ID)
    )
    services.queue_create(cluster=theirs, key="linux-small", queue_id=uuid.UUID(QUEUE_ID))

    queue_gone = deliver(payload("cluster_queue.deleted"), secret=platform.secret, delivery="q")
    cluster_gone = deliver(
        payload("cluster.deleted", queue=False), secret=platform.secret, delivery="c"
    )

    assert queue_gone.json()["message"] == "The queue was already gone."
    assert cluster_gone.json()["message"] == "The cluster was already gone."
    assert Queue.objects.filter(cluster=theirs).count() == 1


# --- webhook_replay -----------------------------------------------------------------------------


def test_webhook_replay_redoes_what_is_missing_and_nothing_else(platform: Platform) -> None:
    assert deliver(payload(), secret=platform.secret).status_code == 200
    services.queue_delete(queue=Queue.objects.get())
    out = StringIO()

    call_command("webhook_replay", "delivery-1", stdout=out)

    created = answer("delivery-1", CREATED, "Created queue 'linux-small'.")
    assert json.loads(out.getvalue()) == created
    assert str(Queue.objects.get().pk) == QUEUE_ID
    delivery = WebhookDelivery.objects.get()
    assert delivery.replayed_at is not None
    assert delivery.response["message"] == "Created cluster 'Open Source' and queue 'linux-small'."
    before = counts()

    out = StringIO()
    call_command("webhook_replay", "delivery-1", stdout=out)

    assert json.loads(out.getvalue()) == answer("delivery-1", CREATED, "The queue already existed.")
    assert counts() == before == {"Cluster": 1, "Queue": 1, "Registry": 1, "WebhookDelivery": 1}


def test_webhook_replay_asks_which_organization_when_two_used_the_id(platform: Platform) -> None:
    globex = services.organization_create(slug="globex", name="Globex")
    _, theirs = services.webhook_secret_create(organization=globex, description="platform")
    assert deliver(payload(), secret=platform.secret, delivery="same").status_code == 200
    other = payload(org="globex", cluster_id=str(uuid.uuid4()), queue_id=str(uuid.uuid4()))
    assert deliver(other, secret=theirs, delivery="same", org="globex").status_code == 200
    services.queue_delete(queue=Queue.objects.get(cluster__organization=globex))

    with pytest.raises(CommandError, match="Several organizations used this delivery id"):
        call_command("webhook_replay", "same", stdout=StringIO())
    out = StringIO()
    call_command("webhook_replay", "same", "--organization", "globex", stdout=out)

    assert json.loads(out.getvalue())["message"] == "Created queue 'linux-small'."
    assert Queue.objects.filter(cluster__organization=globex).count() == 1


def test_webhook_replay_of_an_unknown_delivery_is_an_error(platform: Platform) -> None:
    with pytest.raises(CommandError, match=r"^No recorded delivery 'nope'\.$"):
        call_command("webhook_replay", "nope", stdout=StringIO())


# --- create_webhook_secret ----------------------------------------------------------------------


def test_create_webhook_secret_prints_a_secret_the_database_cannot_give_back() -> None:
    services.organization_create(slug="acme", name="Acme")
    out, err = StringIO(), StringIO()

    call_command("create_webhook_secret", "acme", stdout=out, stderr=err)

    secret = out.getvalue().strip()
    row = WebhookSecret.objects.get()
    assert webhooks.secret_for(row.salt) == secret
    assert secret.startswith(webhooks.SECRET_PREFIX)
    assert row.secret_prefix == secret[:9]
    assert secret not in err.getvalue()
    for column, value in WebhookSecret.objects.values().get().items():
        assert secret not in str(value), column
        assert secret[len(webhooks.SECRET_PREFIX) :] not in str(value), column
    # ... and the platform can sign with it.
    assert deliver(payload(), secret=secret).status_code == 200


def test_create_webhook_secret_refuses_a_third_one() -> None:
    services.organization_create(slug="acme", name="Acme")
    call_command("create_webhook_secret", "acme", stdout=StringIO(), stderr=StringIO())
    call_command("create_webhook_secret", "acme", stdout=StringIO(), stderr=StringIO())
    out = StringIO()

    with pytest.raises(CommandError, match=f"^{re.escape(LIMIT_REACHED)}$"):
        call_command("create_webhook_secret", "acme", stdout=out, stderr=StringIO())

    assert out.getvalue() == ""
    assert WebhookSecret.objects.count() == 2


def test_create_webhook_secret_creates_a_missing_organization_but_not_an_invalid_one() -> None:
    out, err = StringIO(), StringIO()

    call_command("create_webhook_secret", "globex", stdout=out, stderr=err)

    row = WebhookSecret.objects.get()
    assert (row.organization.slug, row.organization.name) == ("globex", "Globex")
    assert webhooks.secret_for(row.salt) == out.getvalue().strip()
    assert err.getvalue().startswith("Created organization globex.\n")

    with pytest.raises(CommandError):
        call_command("create_webhook_secret", "Not A Slug", stdout=StringIO(), stderr=StringIO())
    assert Organization.objects.count() == WebhookSecret.objects.count() == 1


# --- admin --------------------------------------------------------------------------------------


def test_deliveries_are_listed_and_shown_read_only_in_the_admin(
    operator: Client, platform: Platform
) -> None:
    response = deliver(payload(), secret=platform.secret, delivery="delivery-in-admin")
    assert response.status_code == 200
    delivery = WebhookDelivery.objects.get()

    listing = operator.get("/admin/clusters/webhookdelivery/")
    page = operator.get(f"/admin/clusters/webhookdelivery/{delivery.pk}/change/")

    assert listing.status_code == page.status_code == 200
    assert "delivery-in-admin" in listing.text
    assert "delivery-in-admin" in page.text
    assert "Created cluster" in page.text  # the outcome
    assert 'name="_save"' not in page.text  # read-only
    assert operator.get("/admin/clusters/webhookdelivery/add/").status_code == 403


ADMIN = "/admin/clusters/webhooksecret"


def test_a_webhook_secret_added_in_the_admin_is_shown_once(
    operator: Client, platform: Platform
) -> None:
    platform.row.delete()  # start from no secret
    form = {"organization": platform.organization.pk, "description": "platform"}

    response = operator.post(f"{ADMIN}/add/", form)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = response.context["secret"]
    row = WebhookSecret.objects.get()
    assert webhooks.secret_for(row.salt) == secret
    assert '<pre id="webhook-secret"' in response.text
    assert secret in response.text
    for url in (f"{ADMIN}/{row.pk}/change/", f"{ADMIN}/"):
        page = operator.get(url)
        assert page.status_code == 200
        assert secret not in page.text
        assert row.secret_prefix in page.text
    assert deliver(payload(), secret=secret).status_code == 200


def test_a_third_active_webhook_secret_is_a_form_error_in_the_admin(
    operator: Client, platform: Platform
) -> None:
    form = {"organization": platform.organization.pk, "description": "rotated"}
    assert operator.post("/admin/clusters/webhooksecret/add/", form).status_code == 200

    response = operator.post("/admin/clusters/webhooksecret/add/", {**form, "description": "3rd"})

    assert response.status_code == 200
    assert "secret" not in (response.context or {}) or response.context.get("secret") is None
    assert LIMIT_REACHED in response.text
    assert 'class="errornote"' in response.text
    assert WebhookSecret.objects.count() == 2


def test_revoking_in_the_admin_refuses_the_secret_at_once(
    operator: Client, platform: Platform
) -> None:
    response = operator.post(
        "/admin/clusters/webhooksecret/",
        {"action": "revoke", "_selected_action": [platform.row.pk]},
    )

    assert response.status_code == 302
    platform.row.refresh_from_db()
    assert platform.row.revoked_at is not None
    assert deliver(payload(), secret=platform.secret).json() == {"message": "Invalid signature."}


# --- inputs that once were 500s ------------------------------------------------------------------
# Each answers a JSON 4xx and writes nothing.


def test_a_non_ascii_token_is_401(platform: Platform) -> None:
    response = deliver(payload(), token="sécret", client=Client(raise_request_exception=False))

    assert (response.status_code, response.json()) == (401, {"message": "Invalid token."})


def test_deeply_nested_json_is_400(platform: Platform) -> None:
    body = b"[" * 50_000 + b"]" * 50_000  # 100 kB, well under the size limit

    response = deliver(
        body, secret=platform.secret, event=CREATED, client=Client(raise_request_exception=False)
    )

    assert response.status_code == 400
    assert response.json()["message"].startswith("The body is not JSON")


@pytest.mark.parametrize("constant", [float("nan"), float("inf")])
def test_nan_or_infinity_in_a_payload_is_refused(platform: Platform, constant: float) -> None:
    body = payload()
    body["sender"]["score"] = constant  # json.dumps writes NaN / Infinity
    before = counts()

    response = deliver(body, secret=platform.secret, client=Client(raise_request_exception=False))

    assert response.status_code in (400, 422)
    assert counts() == before


def _with_extra(value: str) -> bytes:
    body = payload()
    body["sender"]["note"] = value  # not a field the payload validates: stored as it came
    return json.dumps(body).encode()  # \u-escaped, valid JSON


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        pytest.param({"body": _with_extra("a\x00b")}, (400, 422), id="NUL in the payload"),
        pytest.param(
            {"body": _with_extra("\ud800")}, (400, 422), id="lone surrogate in the payload"
        ),
        pytest.param({"delivery": "d\x00"}, (400,), id="NUL in the delivery id"),
        pytest.param({"org": "ac%00me"}, (401,), id="NUL in the organization of the URL"),
    ],
)
def test_strings_postgresql_refuses_are_a_4xx(
    platform: Platform, where: dict[str, Any], expected: tuple[int, ...]
) -> None:
    before = counts()
    send: dict[str, Any] = {"body": payload(), **where}

    response = deliver(
        send.pop("body"), secret=platform.secret, event=CREATED,
        client=Client(raise_request_exception=False), **send,
    )  # fmt: skip

    assert response.status_code in expected
    assert counts() == before


# --- found in review -----------------------------------------------------------------------------


def test_a_signed_delivery_resent_under_a_new_id_is_a_repeat_not_applied_again(
    platform: Platform,
) -> None:
    body = json.dumps(payload()).encode()
    signature = webhooks.sign(platform.secret, int(time.time()), body)
    first = deliver(body, signature=signature, event=CREATED, delivery="d-1")
    services.queue_delete(queue=Queue.objects.get())

    replayed = deliver(body, signature=signature, event=CREATED, delivery="attacker-1")

    assert replayed.status_code == 200
    assert replayed.json() == first.json()
    assert replayed["X-Delivery-Repeated"] == "true"
    assert not Queue.objects.exists()  # what was deleted stays deleted


def test_a_number_too_large_for_a_float_is_400(platform: Platform) -> None:
    body = json.dumps(payload()).encode().replace(b'"sender": {', b'"sender": {"x": 1e400, ')
    before = counts()

    response = deliver(body, secret=platform.secret, event=CREATED)

    assert response.status_code == 400
    assert response.json() == {"message": "The body is not JSON: 1e400 is too large for a number."}
    assert counts() == before


@pytest.mark.parametrize("odd_id", [1, True, False])
def test_an_id_that_is_not_a_string_is_422(platform: Platform, odd_id: object) -> None:
    body = payload()
    body["cluster"]["id"] = odd_id
    before = counts()

    response = deliver(body, secret=platform.secret)

    assert response.status_code == 422
    assert counts() == before


def test_a_cluster_created_again_with_its_old_id_gets_a_new_namespace(platform: Platform) -> None:
    deliver(payload(), secret=platform.secret, delivery="d-1")
    first = Registry.objects.get(cluster_id=CLUSTER_ID)
    deliver(payload("cluster.deleted", queue=False), secret=platform.secret, delivery="d-2")

    again = deliver(
        payload(), secret=platform.secret, delivery="d-3", timestamp=int(time.time()) - 10
    )

    assert again.status_code == 200, again.content
    second = Registry.objects.get(cluster_id=CLUSTER_ID)
    assert second.pk != first.pk
    assert second.namespace != first.namespace
