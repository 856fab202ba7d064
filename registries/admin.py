"""The operators' console for registries: state badges, the event timeline, actions (retry,
deprovision, verify now), and an overview page. All state is computed: nothing is edited. The
registry backends have their own page (``backend_admin``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from clusters.interface import Cluster, ClusterAdmin
from controlplane import humanize
from controlplane.admin import ReadOnlyAdmin, ReadOnlyTabularInline, shown_duration
from registries import (
    backend_admin,
    conditions,
    maintenance_admin,
    quota_admin,
    retention_admin,
    usage_admin,
    verification_admin,
)
from registries.models import (
    JobCredential,
    Lease,
    Registry,
    RegistryEvent,
    State,
    TokenSigningAuthority,
    TokenSigningKey,
)
from registries.quotas import quota_status
from registries.selectors import registry_overview, signing_key_statuses
from registries.services import registry_deprovision_start, registry_retry, registry_verify

__all__ = [
    "RegistryAdmin", "backend_admin", "maintenance_admin", "quota_admin", "retention_admin",
    "usage_admin",
    "verification_admin",
]  # fmt: skip

#: Badge colours by state: green when usable, red when someone must act.
BADGE_COLOURS: dict[str, str] = {
    State.PENDING: "#6c757d",
    State.PROVISIONING: "#0d6efd",
    State.READY: "#198754",
    State.FAILED: "#dc3545",
    State.DEPROVISIONING: "#fd7e14",
    State.DELETED: "#343a40",
}


#: Condition badge colours by status.
CONDITION_COLOURS = {conditions.TRUE: "#198754", conditions.FALSE: "#dc3545"}


def condition_badge(registry: Registry, type_: str) -> SafeString:
    """The condition's status as a coloured mark with its reason; its message on hover."""
    condition = conditions.condition_get(registry, type_)
    if condition is None:
        return format_html("{}", "–")
    return format_html(
        '<span class="registry-condition condition-{}" title="{}" style="color:{};'
        'font-weight:600">{} {}</span>',
        condition["status"].lower(),
        condition["message"],
        CONDITION_COLOURS.get(condition["status"], "#6c757d"),
        {conditions.TRUE: "✔", conditions.FALSE: "✖"}.get(condition["status"], "?"),
        condition["reason"],
    )


def state_badge(registry: Registry | None) -> SafeString:
    if registry is None:
        return format_html('<span class="registry-badge">{}</span>', "none")
    return format_html(
        '<span class="registry-badge registry-{}" style="background:{};color:#fff;'
        'padding:2px 8px;border-radius:10px;font-weight:600">{}</span>',
        registry.state,
        BADGE_COLOURS[registry.state],
        registry.get_state_display(),
    )


class RegistryEventInline(ReadOnlyTabularInline):
    model = RegistryEvent
    fields = readonly_fields = (
        "created_at",
        "from_state",
        "to_state",
        "attempt",
        "took",
        "message",
    )
    show_change_link = False
    took = shown_duration("duration")


@admin.register(Registry)
class RegistryAdmin(ReadOnlyAdmin):
    list_display = [
        "namespace", "cluster", "badge", "ready", "synced", "quota", "url", "attempts",
        "state_changed_at", "canary_ok", "backend", "storage",
    ]  # fmt: skip
    # A deleted cluster's registry has no cluster: it stays as the record of its namespace.
    list_filter = ["state", "canary_ok", "backend", "driver", "cluster__organization"]
    search_fields = ["namespace", "cluster__name", "url"]
    list_select_related = ["cluster__organization", "backend"]
    inlines = [RegistryEventInline]
    actions = ["retry", "deprovision", "verify", retention_admin.cleanup_now]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Needed for admin actions to show; every field is still read-only.
        return request.user.has_perm("registries.change_registry")

    #: Fields shown humanized, through the display methods below.
    shown_as = {"canary_latency": "canary_took", "usage_bytes": "storage"}
    canary_took = shown_duration("canary_latency", "canary latency")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        fields = (
            self.shown_as.get(field.name, field.name)
            for field in Registry._meta.fields
            if field.name != "conditions"
        )
        return [
            "badge", "usage", "conditions_table", "quota_usage", "retention", "error_detail",
            "gc_verification",
            *fields,
        ]  # fmt: skip

    def get_fields(self, request: HttpRequest, obj: object = None) -> Any:
        # Every field read-only, the conditions as a table rather than their JSON.
        return self.get_readonly_fields(request, obj)

    @admin.display(description="state", ordering="state")
    def badge(self, registry: Registry) -> SafeString:
        return state_badge(registry)

    @admin.display(description="Ready")
    def ready(self, registry: Registry) -> SafeString:
        return condition_badge(registry, conditions.READY)

    @admin.display(description="Synced")
    def synced(self, registry: Registry) -> SafeString:
        return condition_badge(registry, conditions.SYNCED)

    @admin.display(description="storage", ordering="usage_bytes")
    def storage(self, registry: Registry) -> SafeString:
        """Its size, linked to its usage page."""
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:registries_registry_usage", args=[registry.pk]),
            humanize.size(registry.usage_bytes),
        )

    @admin.display(description="usage")
    def usage(self, registry: Registry) -> SafeString:
        """What it holds, and the link to its usage page (charts, largest repositories)."""
        return format_html(
            '<a class="registry-usage-link" href="{}">{} in {} repositor{}, {} tag{}</a>',
            reverse("admin:registries_registry_usage", args=[registry.pk]),
            humanize.size(registry.usage_bytes),
            registry.usage_repositories,
            "y" if registry.usage_repositories == 1 else "ies",
            registry.usage_tags,
            "" if registry.usage_tags == 1 else "s",
        )

    @admin.display(description="quota")
    def quota(self, registry: Registry) -> SafeString:
        return condition_badge(registry, conditions.QUOTA_EXCEEDED)

    @admin.display(description="usage against the quota")
    def quota_usage(self, registry: Registry) -> str:
        status = quota_status(registry)
        where = f" (set by the {status.source})" if status.source else ""
        return f"{status.message}{where}"

    @admin.display(description="retention")
    def retention(self, registry: Registry) -> SafeString:
        return retention_admin.dry_run_link(registry)

    @admin.display(description="error detail")
    def error_detail(self, registry: Registry) -> str:
        """What failed, for operators: hosts, what the registry or a library said. The REST API
        shows tenants ``last_error``, which only names the failure."""
        return conditions.error_detail(registry)

    @admin.display(description="verification after garbage collection")
    def gc_verification(self, registry: Registry) -> SafeString:
        return verification_admin.verification_section(registry)

    @admin.display(description="conditions")
    def conditions_table(self, registry: Registry) -> SafeString:
        rows = [conditions.condition_get(registry, type_) for type_ in conditions.TYPES]
        return format_html(
            '<table class="registry-conditions"><tr><th>type</th><th>status</th><th>reason</th>'
            "<th>message</th><th>last transition</th><th>detail</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} UTC</td><td>{}</td></tr>",
                (
                    (
                        c["type"],
                        c["status"],
                        c["reason"],
                        c["message"],
                        f"{c['last_transition_time']:%Y-%m-%d %H:%M:%S}",
                        c.get("detail", ""),
                    )
                    for c in rows
                    if c is not None
                ),  # fmt: skip
            ),
        )

    @admin.action(
        description="Retry provisioning (or deprovisioning) of selected failed registries",
        permissions=["change"],
    )
    def retry(self, request: HttpRequest, queryset: QuerySet[Registry]) -> None:
        for registry in queryset:
            try:
                retried = registry_retry(registry=registry)
            except ValidationError as exc:
                self.message_user(
                    request, f"Registry {registry}: {exc.messages[0]}", messages.WARNING
                )
            else:
                self.message_user(
                    request, f"Registry {registry}: now {retried.state}.", messages.SUCCESS
                )

    @admin.action(description="Deprovision selected registries…", permissions=["change"])
    def deprovision(
        self, request: HttpRequest, queryset: QuerySet[Registry]
    ) -> TemplateResponse | None:
        """Asks first (the images are deleted), then starts deprovisioning."""
        if request.POST.get("confirmed") != "yes":
            return TemplateResponse(
                request,
                "admin/registries/registry/deprovision_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "registries": queryset,
                    "action": "deprovision",
                    "action_checkbox_name": ACTION_CHECKBOX_NAME,
                    "title": "Deprovision registries?",
                },
            )
        for registry in queryset:
            registry_deprovision_start(
                registry=registry, reason=f"deprovisioned by {request.user} in the console"
            )
            self.message_user(request, f"Registry {registry}: deprovisioning.", messages.SUCCESS)
        return None

    @admin.action(description="Verify selected registries now", permissions=["change"])
    def verify(self, request: HttpRequest, queryset: QuerySet[Registry]) -> None:
        for registry in queryset:
            checked = registry_verify(registry=registry)
            level = messages.SUCCESS if checked.verified_ok else messages.ERROR
            self.message_user(request, f"Registry {registry}: {checked.verification}", level)

    def get_urls(self) -> list[URLPattern]:
        overview = path(
            "overview/",
            self.admin_site.admin_view(self.overview_view),
            name="registries_registry_overview",
        )
        usage = path(
            "<path:object_id>/usage/",
            self.admin_site.admin_view(self.usage_view),
            name="registries_registry_usage",
        )
        return [overview, usage, *super().get_urls()]

    def usage_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return usage_admin.usage_view(self, request, object_id)

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return TemplateResponse(
            request,
            "admin/registries/registry/overview.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Registries overview",
                "overview": registry_overview(now=timezone.now()),
                "colours": BADGE_COLOURS,
            },
        )


@admin.register(RegistryEvent)
class RegistryEventAdmin(ReadOnlyAdmin):
    list_display = ["registry", "from_state", "to_state", "attempt", "took", "created_at"]
    shown_as = {"duration": "took"}
    took = shown_duration("duration")
    list_filter = ["to_state"]
    search_fields = ["registry__namespace", "message"]
    list_select_related = ["registry"]


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    """Who holds the reconciler's lease, and until when (a pass in progress)."""

    list_display = ["name", "holder", "expires_at"]


@admin.register(JobCredential)
class JobCredentialAdmin(ReadOnlyAdmin):
    """Jobs' registry credentials (the agent hook's): which agent token and job each was for,
    and until when it works. The secret is never stored; its hash is not shown either. To end a
    job's access at once, revoke its agent token (every credential made from it stops working)."""

    list_display = [
        "secret_prefix",
        "job_id",
        "agent_token",
        "created_at",
        "expires_at",
        "revoked_at",
    ]
    list_select_related = ["agent_token"]
    search_fields = ["job_id", "secret_prefix"]
    exclude = ["secret_hash"]


@admin.register(TokenSigningAuthority)
class TokenSigningAuthorityAdmin(ReadOnlyAdmin):
    """The CA registries trust: its certificate (public). Its private key is not in the database."""

    list_display = ["fingerprint", "created_at"]
    fields = ["fingerprint", "created_at", "certificate"]
    readonly_fields = ["fingerprint", "created_at", "certificate"]


@admin.register(TokenSigningKey)
class TokenSigningKeyAdmin(ReadOnlyAdmin):
    """The registry token signing keys (``registry_keys status``): which one signs, until when
    the older ones are accepted. Written by ``registry_keys`` only; the private key (encrypted)
    is never shown."""

    list_display = ["kid", "issued_at", "expires_at", "role"]
    fields = ["kid", "issued_at", "expires_at", "role", "certificate"]
    readonly_fields = ["kid", "issued_at", "expires_at", "role", "certificate"]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # One query for every row's role, rather than one per row.
        self._roles = {status.kid: status.role for status in signing_key_statuses()}
        return super().changelist_view(request, extra_context)

    @admin.display(description="role")
    def role(self, key: TokenSigningKey) -> str:
        roles: dict[str, str] = getattr(self, "_roles", {})
        if key.kid not in roles:
            roles = {status.kid: status.role for status in signing_key_statuses()}
        return roles.get(key.kid, "")


# The clusters app knows nothing of registries; its console shows each cluster's registry from
# here, by extending its admin.
admin.site.unregister(Cluster)


@admin.register(Cluster)
class ClusterWithRegistryAdmin(ClusterAdmin):
    list_display = [*ClusterAdmin.list_display, "registry_state"]
    list_select_related = [*ClusterAdmin.list_select_related, "registry"]

    @admin.display(description="registry", ordering="registry__state")
    def registry_state(self, cluster: Cluster) -> SafeString:
        return state_badge(getattr(cluster, "registry", None))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = super().get_readonly_fields(request, obj)
        return [*fields, "registry_state"] if obj else fields
