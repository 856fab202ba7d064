"""The console's garbage collections (docs/retention.md#garbage-collection): each window's state
and progress, freed bytes, what the verification found (its failures inline) and the backend's
replicas with the mode each reports; and the replicas themselves. Read-only, but for deleting a
replica gone for good (it blocks its backend's windows): a collection is asked for with the
backends page's action "Collect garbage now" (``backend_admin``), the command ``registry_gc`` or
the operators' API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from controlplane import humanize
from controlplane.admin import ReadOnlyAdmin, ReadOnlyTabularInline, shown_size
from registries.maintenance import (
    GarbageCollection,
    RegistryReplica,
    VerificationFailure,
)
from registries.services import replica_delete, replicas_live

STATE_COLOURS = {"succeeded": "#198754", "failed": "#dc3545"}


class VerificationFailureInline(ReadOnlyTabularInline):
    model = VerificationFailure
    fields = ("registry", "repository", "tag", "kind", "digest", "parent_digest", "detail")
    readonly_fields = fields
    show_change_link = False


@admin.register(GarbageCollection)
class GarbageCollectionAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at", "backend", "state_badge", "progress_shown", "trigger", "freed_shown",
        "tags_verified", "missing",
    ]  # fmt: skip
    list_filter = ["state", "trigger", "backend"]
    list_select_related = ["backend"]
    inlines = [VerificationFailureInline]
    fields = (
        "backend", "state", "progress_shown", "trigger", "requested_by", "created_at",
        "started_at", "state_changed_at", "finished_at", "error", "freed_shown",
        "storage_bytes_before", "storage_bytes_after", "usage_bytes_before", "usage_bytes_after",
        "blobs_deleted", "manifests_deleted", "uploads_purged", "delete_untagged",
        "delete_untagged_reason", "tags_verified", "blobs_verified", "missing", "replicas_shown",
        "output",
    )  # fmt: skip
    readonly_fields = fields
    shown_as = {
        "storage_bytes_before": "storage_before_shown",
        "storage_bytes_after": "storage_after_shown",
        "usage_bytes_before": "usage_before_shown",
        "usage_bytes_after": "usage_after_shown",
    }
    storage_before_shown = shown_size("storage_bytes_before", "storage before")
    storage_after_shown = shown_size("storage_bytes_after", "storage after")
    usage_before_shown = shown_size("usage_bytes_before", "usage before")
    usage_after_shown = shown_size("usage_bytes_after", "usage after")

    def get_readonly_fields(self, request: object, obj: object = None) -> list[str]:
        return [self.shown_as.get(name, name) for name in self.fields if isinstance(name, str)]

    @admin.display(description="state", ordering="state")
    def state_badge(self, collection: GarbageCollection) -> SafeString:
        return format_html(
            '<span style="color:{};font-weight:600">{}</span>',
            STATE_COLOURS.get(collection.state, "#0d6efd"),
            collection.get_state_display(),
        )

    @admin.display(description="progress")
    def progress_shown(self, collection: GarbageCollection) -> str:
        progress = collection.progress or {}
        done, total = progress.get("done"), progress.get("total")
        counted = f" ({done}/{total})" if total else ""
        return f"{progress.get('message', '')}{counted}"

    @admin.display(description="freed")
    def freed_shown(self, collection: GarbageCollection) -> str:
        return humanize.size(collection.freed_bytes)

    @admin.display(description="replicas (mode reported)")
    def replicas_shown(self, collection: GarbageCollection) -> SafeString:
        live = {replica.pk for replica in replicas_live(collection.backend_id)}
        replicas = RegistryReplica.objects.filter(backend_id=collection.backend_id)
        now = timezone.now()
        return format_html_join(
            "",
            "<div>{}: {} (heard from {} ago{})</div>",
            (
                (
                    replica.name,
                    replica.get_mode_display(),
                    humanize.duration(now - replica.seen_at),
                    "" if replica.pk in live else ", gone",
                )
                for replica in replicas
            ),
        ) or format_html("<em>{}</em>", "no replica reports to the control plane")


@admin.register(RegistryReplica)
class RegistryReplicaAdmin(ReadOnlyAdmin):
    """Read-only but for deleting a replica gone for good: a quiet replica blocks every window of
    its backend (docs/retention.md#replicas) until it reports again or is deleted here."""

    list_display = ["name", "backend", "mode", "seen_at", "mode_changed_at"]
    list_filter = ["backend", "mode"]
    list_select_related = ["backend"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    def delete_model(self, request: HttpRequest, obj: RegistryReplica) -> None:
        replica_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RegistryReplica]) -> None:
        for replica in queryset.select_related("backend"):
            replica_delete(replica)
