"""Operators' view of registries and their history. All state is computed: read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.admin import ReadOnlyAdmin, ReadOnlyTabularInline
from registries.models import Registry, RegistryEvent
from registries.services import registry_retry


class RegistryEventInline(ReadOnlyTabularInline):
    model = RegistryEvent
    fields = readonly_fields = (
        "created_at",
        "from_state",
        "to_state",
        "attempt",
        "duration",
        "message",
    )
    show_change_link = False


@admin.register(Registry)
class RegistryAdmin(ReadOnlyAdmin):
    list_display = ["namespace", "cluster", "state", "url", "attempts", "state_changed_at"]
    # A deleted cluster's registry has no cluster: it stays as the record of its namespace.
    list_filter = ["state", "driver", "cluster__organization"]
    search_fields = ["namespace", "cluster__name", "url"]
    list_select_related = ["cluster__organization"]
    inlines = [RegistryEventInline]
    actions = ["retry"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Needed for admin actions to show; every field is still read-only.
        return request.user.has_perm("registries.change_registry")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in Registry._meta.fields]

    @admin.action(
        description="Retry provisioning (or deprovisioning) of selected failed registries"
    )
    def retry(self, request: HttpRequest, queryset: QuerySet[Registry]) -> None:
        for registry in queryset:
            try:
                retried = registry_retry(registry=registry)
            except ValidationError as exc:
                self.message_user(request, f"{registry}: {exc.messages[0]}", messages.WARNING)
            else:
                self.message_user(request, f"{registry}: now {retried.state}.", messages.SUCCESS)


@admin.register(RegistryEvent)
class RegistryEventAdmin(ReadOnlyAdmin):
    list_display = ["registry", "from_state", "to_state", "attempt", "duration", "created_at"]
    list_filter = ["to_state"]
    search_fields = ["registry__namespace", "message"]
    list_select_related = ["registry"]
