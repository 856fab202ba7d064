"""The webhook in the console: deliveries listed read-only, secrets shown once, revoked at once."""

from __future__ import annotations

import pytest
from django.test import Client

from clusters import webhooks
from clusters.models import WebhookDelivery, WebhookSecret
from tests.clusters.webhooks.helpers import LIMIT_REACHED, Platform, deliver, payload

pytestmark = pytest.mark.django_db


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
