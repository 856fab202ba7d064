"""The webhook's management commands: ``webhook_replay`` and ``create_webhook_secret``."""

from __future__ import annotations

import json
import re
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from clusters import services, webhooks
from clusters.models import Organization, Queue, WebhookDelivery, WebhookSecret
from tests.clusters.webhooks.helpers import (
    CREATED,
    LIMIT_REACHED,
    QUEUE_ID,
    Platform,
    answer,
    counts,
    deliver,
    payload,
)

pytestmark = pytest.mark.django_db


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
    _, theirs = webhooks.webhook_secret_create(organization=globex, description="platform")
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
