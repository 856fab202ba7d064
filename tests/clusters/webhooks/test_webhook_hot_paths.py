"""The webhook's hot paths (issue 15, P6): a forged delivery is refused with HMACs alone (the
organization's secrets cached per process) and counted, not logged; a retry is answered from one
indexed lookup before its body is parsed, and the process's next retries of it from memory;
secrets rotate and revoke as before, within the cache's bound for other processes.

Tests run outside a transaction (``transaction=True``): the caches keep nothing read inside one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clusters import webhooks
from clusters.models import WebhookSecret
from clusters.webhooks import payloads
from controlplane import hotcache
from tests.clusters.webhooks.helpers import (
    CREATED,
    MALFORMED_SIGNATURE,
    NO_CREDENTIALS,
    Platform,
    counts,
    deliver,
    payload,
)
from tests.controlplane.test_metrics import delta, scrape  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)

FORGED = webhooks.SECRET_PREFIX + "0" * 48
REFUSALS = "controlplane_webhook_refusals_total"


@pytest.fixture(autouse=True)
def cache(settings) -> Iterator[None]:
    """The cache's bound as deployed, and nothing cached before or after (the rows a test
    reads are flushed after it)."""
    settings.HOT_CACHE_SECONDS = 5
    hotcache.clear()
    yield
    hotcache.clear()


def test_a_forged_delivery_is_refused_without_a_query_or_a_log_line(
    platform: Platform,
    caplog,
    scrape,  # noqa: F811
) -> None:
    deliver(payload(), secret=FORGED)  # the organization's secrets are read once, then cached
    before = scrape()

    with caplog.at_level(logging.INFO), CaptureQueriesContext(connection) as captured:
        responses = [deliver(payload(), secret=FORGED, delivery=f"f-{n}") for n in range(3)]

    assert [(r.status_code, r.json()) for r in responses] == [
        (401, {"message": "Invalid signature."})
    ] * 3
    assert len(captured) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert delta(before, scrape(), REFUSALS, reason="signature") == 3
    assert counts()["WebhookDelivery"] == 0


@pytest.mark.parametrize(
    ("send", "reason", "message"),
    [
        (lambda p: deliver(payload()), "unsigned", NO_CREDENTIALS),
        (lambda p: deliver(payload(), signature="sha256=abc"), "malformed", MALFORMED_SIGNATURE),
        (lambda p: deliver(payload(), secret=p.secret, timestamp=p.now - 301), "stale", None),
        (lambda p: deliver(payload(), token=FORGED), "token", "Invalid token."),
        (lambda p: deliver(payload(), secret=p.secret, org="nobody"), "signature", None),
    ],
    ids=["unsigned", "malformed", "stale", "wrong token", "unknown organization"],
)
def test_each_refusal_is_counted_by_its_reason(
    frozen: Platform,
    scrape,  # noqa: F811
    send,
    reason,
    message,
) -> None:
    before = scrape()

    response = send(frozen)

    assert response.status_code == 401
    if message is not None:
        assert response.json() == {"message": message}
    assert delta(before, scrape(), REFUSALS, reason=reason) == 1


def test_a_retry_is_one_indexed_lookup_and_its_body_is_not_parsed(
    platform: Platform, monkeypatch
) -> None:
    body = json.dumps(payload()).encode()
    signature = webhooks.sign(platform.secret, int(time.time()), body)
    first = deliver(body, signature=signature, event=CREATED, delivery="d-1")
    parsed: list[bytes] = []
    parse = payloads.parse_body
    monkeypatch.setattr(payloads, "parse_body", lambda raw: parsed.append(raw) or parse(raw))

    with CaptureQueriesContext(connection) as captured:
        retried = deliver(body, signature=signature, event=CREATED, delivery="d-1")
        resent = deliver(body, signature=signature, event=CREATED, delivery="another-id")

    for response in (retried, resent):
        assert response.status_code == 200
        assert response.json() == first.json()
        assert response["X-Delivery-Repeated"] == "true"
    assert parsed == []
    assert len(captured) == 2  # one lookup each: (organization, delivery id) or the signature
    assert "clusters_webhookdelivery" in captured[0]["sql"]
    assert counts()["WebhookDelivery"] == 1


@pytest.mark.parametrize("deliveries", [1, 2], ids=["recorded", "remembered"])
def test_what_is_not_an_exact_repeat_is_answered_as_before(
    platform: Platform, deliveries: int
) -> None:
    body = json.dumps(payload()).encode()
    for _ in range(deliveries):  # applied; then, retried, remembered by the process
        assert (
            deliver(body, secret=platform.secret, event=CREATED, delivery="d-1").status_code == 200
        )

    other_event = deliver(payload(), secret=platform.secret, delivery="d-1", event="ping")
    other_body = deliver(payload(key="other"), secret=platform.secret, delivery="d-1")

    assert other_event.status_code == 400
    assert "does not agree with the body's event" in other_event.json()["message"]
    assert other_body.status_code == 422
    assert "was already used for a different delivery" in other_body.json()["message"]
    assert counts()["WebhookDelivery"] == 1


def test_a_new_secret_works_at_once_and_a_revoked_one_stops_at_once(
    platform: Platform,
) -> None:
    assert deliver(payload(), secret=FORGED).status_code == 401  # the one secret, cached
    row, new = webhooks.webhook_secret_create(
        organization=platform.organization, description="next"
    )

    assert deliver(payload(), secret=new, delivery="with-new").status_code == 200

    webhooks.webhook_secret_revoke(secret=platform.row)
    refused = deliver(payload(), secret=platform.secret, delivery="with-old")
    assert (refused.status_code, refused.json()) == (401, {"message": "Invalid signature."})


def test_a_secret_revoked_by_another_process_applies_nothing_more(
    platform: Platform, monkeypatch
) -> None:
    assert deliver(payload(), secret=platform.secret, delivery="d-1").status_code == 200
    # Revoked elsewhere: this process's cache does not hear of it.
    WebhookSecret.objects.filter(pk=platform.row.pk).update(revoked_at=timezone.now())

    new = deliver(payload(key="other"), secret=platform.secret, delivery="d-2")
    assert (new.status_code, new.json()) == (401, {"message": "Invalid signature."})
    # Within the bound (HOT_CACHE_SECONDS), a retry of what it applied still gets its answer;
    retried = deliver(payload(), secret=platform.secret, delivery="d-1")
    assert (retried.status_code, retried["X-Delivery-Repeated"]) == (200, "true")
    # once its bound has passed, the secret is refused for everything.
    now = hotcache.clock()
    monkeypatch.setattr(hotcache, "clock", lambda: now + 5.1)
    again = deliver(payload(), secret=platform.secret, delivery="d-1")
    assert (again.status_code, again.json()) == (401, {"message": "Invalid signature."})
    assert counts()["WebhookDelivery"] == 1


def test_what_content_negotiation_answers_is_still_its_answer(platform: Platform) -> None:
    """The plain-Django path answers a plain request only; what the REST framework negotiates
    (``Accept``, ``?format=``) goes to it, and gets what it got before."""
    body = json.dumps(payload()).encode()
    first = deliver(body, secret=platform.secret, event=CREATED, delivery="d-1")

    def send(secret: str, path: str = "", **headers: str) -> Any:
        signature = webhooks.sign(secret, int(time.time()), body)
        return Client().post(
            f"/v2/webhooks/buildkite/acme{path}",
            body,
            content_type="application/json",
            headers={
                webhooks.SIGNATURE_HEADER: signature,
                webhooks.EVENT_HEADER: CREATED,
                webhooks.DELIVERY_HEADER: "d-1",
                **headers,
            },
        )

    assert send(FORGED, Accept="text/html").status_code == 406
    assert send(platform.secret, "?format=xml").status_code == 404
    indented = send(platform.secret, Accept="application/json; indent=2")
    assert indented.status_code == 200
    assert indented.content.startswith(b"{\n  ")
    assert indented.json() == first.json()
    assert indented["X-Delivery-Repeated"] == "true"


# --- a retry answered from the process's memory -------------------------------------------------


def _signed(platform: Platform, body: bytes) -> str:
    return webhooks.sign(platform.secret, int(time.time()), body)


def test_a_retry_of_the_same_delivery_is_looked_up_once_per_process(platform: Platform) -> None:
    body = json.dumps(payload()).encode()
    signature = _signed(platform, body)
    first = deliver(body, signature=signature, event=CREATED, delivery="d-1")
    looked_up = deliver(body, signature=signature, event=CREATED, delivery="d-1")

    with CaptureQueriesContext(connection) as captured:
        remembered = [
            deliver(body, signature=signature, event=CREATED, delivery="d-1") for _ in range(3)
        ]

    assert len(captured) == 0
    for response in (looked_up, *remembered):
        assert response.status_code == 200
        assert response.content == looked_up.content
        assert response.json() == first.json()
        assert response["X-Delivery-Repeated"] == "true"
        assert response["Content-Type"] == "application/json"
    assert counts()["WebhookDelivery"] == 1


def test_a_retry_by_token_is_remembered_too(platform: Platform) -> None:
    token = {"token": platform.secret, "delivery": "t-1"}
    first = deliver(payload(), **token)
    deliver(payload(), **token)

    with CaptureQueriesContext(connection) as captured:
        retried = deliver(payload(), **token)

    assert len(captured) == 0
    assert (retried.status_code, retried["X-Delivery-Repeated"]) == (200, "true")
    assert retried.json() == first.json()


def test_a_delivery_resent_under_another_id_or_signature_is_looked_up_each_time(
    platform: Platform, monkeypatch
) -> None:
    """Only a record found under the request's own id and signature is remembered: under
    another one, a row recorded later could be the better match."""
    body = json.dumps(payload()).encode()
    signature = _signed(platform, body)
    first = deliver(body, signature=signature, event=CREATED, delivery="d-1")
    later = webhooks.sign(platform.secret, int(time.time()) + 1, body)  # the same body re-signed

    with CaptureQueriesContext(connection) as captured:
        responses = [
            deliver(body, signature=signature, event=CREATED, delivery="another-id"),
            deliver(body, signature=signature, event=CREATED, delivery="another-id"),
            deliver(body, signature=later, event=CREATED, delivery="d-1"),
            deliver(body, signature=later, event=CREATED, delivery="d-1"),
        ]

    assert len(captured) == 4
    for response in responses:
        assert (response.status_code, response["X-Delivery-Repeated"]) == (200, "true")
        assert response.json() == first.json()
    assert counts()["WebhookDelivery"] == 1


def test_a_remembered_retry_is_looked_up_again_after_the_bound(
    platform: Platform, monkeypatch
) -> None:
    body = json.dumps(payload()).encode()
    signature = _signed(platform, body)
    for _ in range(2):  # applied, then looked up and remembered
        deliver(body, signature=signature, event=CREATED, delivery="d-1")
    now = hotcache.clock()
    monkeypatch.setattr(hotcache, "clock", lambda: now + 5.1)

    with CaptureQueriesContext(connection) as captured:
        retried = deliver(body, signature=signature, event=CREATED, delivery="d-1")

    assert (retried.status_code, retried["X-Delivery-Repeated"]) == (200, "true")
    # The organization's secrets and the delivery, read again.
    assert [q["sql"].count("clusters_webhookdelivery") > 0 for q in captured] == [False, True]


def test_an_organization_deleted_in_this_process_gets_no_remembered_answer(
    platform: Platform,
) -> None:
    gone = "cluster.deleted"  # recorded, and nothing created that would keep the organization
    body = json.dumps(payload(gone, queue=False)).encode()
    signature = _signed(platform, body)
    for _ in range(2):  # applied, then looked up and remembered
        deliver(body, signature=signature, event=gone, delivery="d-1")

    platform.organization.delete()
    retried = deliver(body, signature=signature, event=gone, delivery="d-1")

    assert (retried.status_code, retried.json()) == (401, {"message": "Invalid signature."})
    assert counts()["WebhookDelivery"] == 0
