"""The console's registry quotas: an organization's default (no cluster) and clusters'
overrides, added, changed and deleted through ``registries.services.quotas`` (the same
validation, audit rows and re-evaluation as the REST API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from registries.quotas import RegistryQuota, human_bytes
from registries.services.quotas import LIMIT_FIELDS, quota_delete, quota_set, quota_validate


class OverrideForm(forms.ModelForm[Any]):
    """The form of a row that is an organization's default (no cluster) or a cluster's
    override (quotas, retention policies): the service's validation runs in ``clean``, its
    errors on their fields, so that a bad value writes nothing."""

    def clean_with(self, validate: Callable[[Any, Any, dict[str, Any]], object]) -> dict[str, Any]:
        cleaned = super().clean() or {}
        organization = cleaned.get("organization")
        if organization is None and self.instance.organization_id is not None:
            organization = self.instance.organization
        if organization is None:
            return cleaned  # the field's own error is shown
        try:
            validate(organization, cleaned.get("cluster", self.instance.cluster), cleaned)
        except ValidationError as exc:
            errors = exc.error_dict if hasattr(exc, "error_dict") else {"cluster": exc.error_list}
            for field, messages in errors.items():
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


class OverrideAdmin(admin.ModelAdmin[Any]):
    """The console of such rows: which one a row is (its organization and cluster) never
    changes: delete it and add another."""

    list_select_related = ["organization", "cluster"]
    search_fields = ["organization__slug", "cluster__name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["organization", "cluster"] if obj is not None else []

    @admin.display(description="applies to")
    def applies_to(self, row: Any) -> str:
        return str(row.cluster) if row.cluster else "the organization's clusters (default)"


class RegistryQuotaForm(OverrideForm):
    class Meta:
        model = RegistryQuota
        fields = ["organization", "cluster", *LIMIT_FIELDS]
        help_texts = {
            "cluster": "Empty: the organization's default, for its clusters without their own.",
            "hard_bytes": "Bytes; at or over it, no push is granted. Empty: no limit.",
            "soft_bytes": "Bytes; empty: 80% of the hard limit.",
            "hard_tags": "At or over this many tags, no push is granted. Empty: no limit.",
        }

    def clean(self) -> dict[str, Any]:
        """The service's checks (``quota_validate``), here so that a bad value is shown on the
        form and nothing is written: ``save_model`` runs after validation, where an error is a
        500."""
        return self.clean_with(
            lambda organization, cluster, cleaned: quota_validate(
                organization=organization,
                cluster=cluster,
                values={name: cleaned.get(name) for name in LIMIT_FIELDS},
            )
        )


@admin.register(RegistryQuota)
class RegistryQuotaAdmin(OverrideAdmin):
    form = RegistryQuotaForm
    list_display = ["organization", "applies_to", "hard", "soft", "hard_tags", "updated_at"]
    list_filter = ["organization"]

    @admin.display(description="hard limit", ordering="hard_bytes")
    def hard(self, quota: RegistryQuota) -> str:
        return human_bytes(quota.hard_bytes)

    @admin.display(description="soft limit")
    def soft(self, quota: RegistryQuota) -> str:
        return human_bytes(quota.limits.soft_bytes)

    def save_model(self, request: HttpRequest, obj: RegistryQuota, form: Any, change: bool) -> None:
        # The form ran the same checks (``clean``): nothing is refused here.
        saved = quota_set(
            organization=obj.organization,
            cluster=obj.cluster,
            **{name: getattr(obj, name) for name in LIMIT_FIELDS},
        )
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: RegistryQuota) -> None:
        quota_delete(organization=obj.organization, cluster=obj.cluster)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RegistryQuota]) -> None:
        for quota in queryset.select_related("organization", "cluster"):
            self.delete_model(request, quota)
