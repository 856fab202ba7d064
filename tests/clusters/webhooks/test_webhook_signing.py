"""What the platform's webhook, ``POST /v2/webhooks/buildkite/<org>``, refuses.

Every refusal (who sent it: 401; what was sent: 400, 413, 422) has its exact status and JSON
body and writes nothing; secrets rotate without downtime; inputs that once were 500s are a 4xx.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from clusters import instance_shapes, webhooks
from clusters.models import WebhookDelivery, WebhookSecret
from tests.clusters.webhooks.helpers import (
    CREATED,
    LIMIT_REACHED,
    MALFORMED_SIGNATURE,
    NO_CREDENTIALS,
    NO_DELIVERY_ID,
    Platform,
    counts,
    deliver,
    payload,
)

pytestmark = pytest.mark.django_db


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
            webhooks.webhook_secret_revoke(secret=p.row),
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
    new_row, new = webhooks.webhook_secret_create(
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
        webhooks.webhook_secret_create(organization=platform.organization, description="third")
    assert refused.value.messages == [LIMIT_REACHED]
    assert WebhookSecret.objects.count() == 2

    webhooks.webhook_secret_revoke(secret=old_row)
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
    webhooks.webhook_secret_create(organization=platform.organization, description="next")


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
