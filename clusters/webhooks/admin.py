"""Operators' view of webhook secrets and the deliveries received (registered by
``clusters.admin``, which imports this module).

Secrets are created through ``clusters.webhooks.signing`` so that the limit of two active secrets
holds here as on the command line.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms import ModelForm
from django.http import HttpRequest

from clusters.models import WebhookDelivery, WebhookSecret
from clusters.secret_admin import TokenAdmin
from clusters.webhooks.signing import (
    webhook_secret_create,
    webhook_secret_limit_error,
    webhook_secret_revoke,
)
from controlplane.admin import ReadOnlyAdmin, adopt, shown_duration


class WebhookSecretForm(forms.ModelForm[WebhookSecret]):
    class Meta:
        model = WebhookSecret
        fields = ["organization", "description"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        organization = cleaned.get("organization")
        if organization and (error := webhook_secret_limit_error(organization)):
            raise ValidationError(error)
        return cleaned


@admin.register(WebhookSecret)
class WebhookSecretAdmin(TokenAdmin):
    """Webhook secrets: created here (or ``manage.py create_webhook_secret``), the secret shown
    once; at most two active per organization, so one can be rotated without downtime."""

    list_display = ["description", "secret_prefix", "organization", "created_at", "revoked_at"]
    list_filter = ["organization"]
    search_fields = ["description", "secret_prefix", "organization__slug"]
    list_select_related = ["organization"]
    secret_id = "webhook-secret"  # noqa: S105 - an HTML id
    form = WebhookSecretForm

    def describe_scope(self, obj: WebhookSecret) -> str:
        return f"organization {obj.organization}"

    def revoke_token(self, token: WebhookSecret) -> None:
        webhook_secret_revoke(secret=token)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["organization", "description"]
        return ["id", "organization", "description", "secret_prefix", "created_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.get_fields(request, obj) if obj else []

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            return
        secret, value = webhook_secret_create(
            organization=obj.organization, description=obj.description
        )
        adopt(obj, secret)
        request._created_secret = value  # type: ignore[attr-defined]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "delivery_id", "event", "organization", "verified_by", "received_at", "took",
        "replayed_at",
    ]  # fmt: skip
    shown_as = {"duration": "took"}
    took = shown_duration("duration")
    list_filter = ["event", "organization", "verified_by"]
    search_fields = ["delivery_id", "organization__slug"]
    list_select_related = ["organization"]
