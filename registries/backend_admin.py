"""The console's registry backends: the list (state, weight, capacity, registries on each), adding
and changing one through ``registries.services.backends`` (the same validation as the REST API),
and the actions drain and activate."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from registries.maintenance import CollectionTrigger
from registries.models import BackendState, RegistryBackend, State
from registries.services import CollectionActive, collection_request
from registries.services.backends import (
    CHANGEABLE,
    backend_activate,
    backend_create,
    backend_drain,
    backend_update,
    backend_validate,
)

STATE_COLOURS: dict[str, str] = {BackendState.ACTIVE: "#198754", BackendState.DRAINING: "#fd7e14"}


class RegistryBackendForm(forms.ModelForm[RegistryBackend]):
    class Meta:
        model = RegistryBackend
        fields = [
            "name", "api_url", "public_host", "token_service", "storage", "labels", "weight",
            "capacity", "state", "gc_config",
        ]  # fmt: skip

    def clean(self) -> dict[str, Any]:
        """The services' validation (``backend_validate``) on the form's values."""
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        values = {
            name: cleaned.get(name, getattr(self.instance, name)) for name in self.Meta.fields
        }
        try:
            backend_validate(RegistryBackend(pk=self.instance.pk, **values))
        except ValidationError as exc:
            for name, problems in exc.message_dict.items():
                for problem in problems:
                    self.add_error(name if name in self.fields else None, problem)
        return cleaned


@admin.register(RegistryBackend)
class RegistryBackendAdmin(admin.ModelAdmin[RegistryBackend]):
    form = RegistryBackendForm
    list_display = [
        "name", "state_badge", "weight", "capacity", "registry_count", "storage",
        "public_host_shown", "token_service_shown", "api_url_shown",
    ]  # fmt: skip
    list_filter = ["state", "storage"]
    search_fields = ["name", "public_host", "token_service", "api_url"]
    readonly_fields = ["hosts_changed_at", "created_at", "updated_at"]
    actions = ["drain", "activate", "collect_garbage"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RegistryBackend]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                registry_total=Count("registries", filter=~Q(registries__state=State.DELETED))
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        fields = list(self.readonly_fields)
        return ["name", "storage", *fields] if obj is not None else fields

    @admin.display(description="state", ordering="state")
    def state_badge(self, backend: RegistryBackend) -> SafeString:
        return format_html(
            '<span class="backend-state backend-{}" style="color:{};font-weight:600">{}</span>',
            backend.state,
            STATE_COLOURS.get(backend.state, "#6c757d"),
            backend.get_state_display(),
        )

    @admin.display(description="registries", ordering="registry_total")
    def registry_count(self, backend: RegistryBackend) -> int:
        return int(getattr(backend, "registry_total", 0))

    @admin.display(description="public host")
    def public_host_shown(self, backend: RegistryBackend) -> str:
        return backend.public_host or "(REGISTRY_PUBLIC_HOST)"

    @admin.display(description="token service")
    def token_service_shown(self, backend: RegistryBackend) -> str:
        return backend.token_service or "(REGISTRY_TOKEN_SERVICE)"

    @admin.display(description="API URL")
    def api_url_shown(self, backend: RegistryBackend) -> str:
        return backend.api_url or "(REGISTRY_URL)"

    def save_model(
        self, request: HttpRequest, obj: RegistryBackend, form: Any, change: bool
    ) -> None:
        """Through the services, as the REST API writes (the form validated the same way)."""
        data = form.cleaned_data
        if not change:
            created = backend_create(
                **{name: data[name] for name in RegistryBackendForm.Meta.fields}
            )
            obj.pk = created.pk
            return
        changes = {name: data[name] for name in CHANGEABLE if name in form.changed_data}
        if changes:
            backend_update(backend=obj, **changes)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # A backend is drained, not deleted: its registries keep it (PROTECT).
        return False

    @admin.action(description="Drain selected backends (no new registries)", permissions=["change"])
    def drain(self, request: HttpRequest, queryset: QuerySet[RegistryBackend]) -> None:
        for backend in queryset:
            backend_drain(backend=backend)
            self.message_user(
                request, f"Backend {backend}: draining (no new registries).", messages.SUCCESS
            )

    @admin.action(description="Activate selected backends", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[RegistryBackend]) -> None:
        for backend in queryset:
            backend_activate(backend=backend)
            self.message_user(request, f"Backend {backend}: active.", messages.SUCCESS)

    @admin.action(description="Collect garbage now", permissions=["change"])
    def collect_garbage(self, request: HttpRequest, queryset: QuerySet[RegistryBackend]) -> None:
        """A maintenance window on each (docs/retention.md#garbage-collection); its progress is
        on the garbage collections page."""
        for backend in queryset:
            try:
                collection = collection_request(
                    backend, trigger=CollectionTrigger.OPERATOR, actor=str(request.user)
                )
            except CollectionActive as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            self.message_user(
                request,
                format_html(
                    'Backend {}: garbage collection queued (<a href="{}">its progress</a>).',
                    backend,
                    reverse("admin:registries_garbagecollection_change", args=[collection.pk]),
                ),
                messages.SUCCESS,
            )
