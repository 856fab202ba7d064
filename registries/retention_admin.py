"""The console's retention policies (docs/retention.md#retention-policies): an organization's
default (no cluster) and clusters' overrides, added, changed and deleted through
``registries.services.retention`` (the same validation and audit rows as the REST API); a
registry's dry run page (``/admin/registries/retentionpolicy/dry-run/<registry id>/``, linked
from the registry's page), which lists what the policy deletes and what it keeps and why, with
a button that runs it now; the "clean up now" action on registries; the runs, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from controlplane import humanize
from controlplane.admin import ReadOnlyAdmin
from registries.models import Registry
from registries.quota_admin import OverrideAdmin, OverrideForm
from registries.retention import (
    POLICY_FIELDS,
    RetentionPolicy,
    RetentionRun,
    RetentionTrigger,
    policy_for,
)
from registries.services import (
    RegistryNotReady,
    RetentionRunning,
    retention_apply,
    retention_plan,
    retention_policy_delete,
    retention_policy_set,
    retention_policy_validate,
)


class RetentionPolicyForm(OverrideForm):
    class Meta:
        model = RetentionPolicy
        fields = ["organization", "cluster", *POLICY_FIELDS]
        help_texts = {
            "cluster": "Empty: the organization's default, for its clusters without their own.",
            "keep_newest": "Keep the newest N tags of each repository. Empty: no such rule.",
            "delete_older_than_days": "Delete tags pushed more than D days ago. Empty: no such "
            "rule.",
            "unless_pulled_within_days": "... unless pulled within P days. Empty: however "
            "recently pulled.",
            "protected_tags": 'A JSON list of glob patterns never deleted, e.g. ["latest", "v*"].',
            "recent_hours": "A tag pushed or pulled within this many hours is never deleted.",
        }

    def clean(self) -> dict[str, Any]:
        """The service's checks (``retention_policy_validate``), shown on the form; nothing is
        written when one fails (``save_model`` runs only after a valid form)."""
        return self.clean_with(
            lambda organization, cluster, cleaned: retention_policy_validate(
                organization=organization,
                cluster=cluster,
                values={name: cleaned[name] for name in POLICY_FIELDS if name in cleaned},
            )
        )


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(OverrideAdmin):
    form = RetentionPolicyForm
    list_display = [
        "organization", "applies_to", "enabled", "keep_newest", "delete_older_than_days",
        "unless_pulled_within_days", "protected", "recent_hours", "updated_at",
    ]  # fmt: skip
    list_filter = ["enabled", "organization"]

    @admin.display(description="protected tags")
    def protected(self, policy: RetentionPolicy) -> str:
        return ", ".join(policy.protected_tags) or "none"

    def save_model(
        self, request: HttpRequest, obj: RetentionPolicy, form: Any, change: bool
    ) -> None:
        # The form ran the same checks (``clean``): nothing is refused here.
        saved = retention_policy_set(
            organization=obj.organization,
            cluster=obj.cluster,
            values={name: getattr(obj, name) for name in POLICY_FIELDS},
        )
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: RetentionPolicy) -> None:
        retention_policy_delete(organization=obj.organization, cluster=obj.cluster)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RetentionPolicy]) -> None:
        for policy in queryset.select_related("organization", "cluster"):
            self.delete_model(request, policy)

    def get_urls(self) -> list[URLPattern]:
        dry_run = path(
            "dry-run/<uuid:registry_id>/",
            self.admin_site.admin_view(self.dry_run_view),
            name="registries_retentionpolicy_dry_run",
        )
        return [dry_run, *super().get_urls()]

    def dry_run_view(self, request: HttpRequest, registry_id: str) -> HttpResponse:
        """What the registry's policy deletes now and what it keeps (GET); a POST runs it."""
        if not request.user.has_perm("registries.view_registry"):
            raise PermissionDenied
        registry = Registry.objects.select_related("cluster__organization").filter(pk=registry_id)
        found = registry.first()
        if found is None:
            raise Http404("No registry found")
        if request.method == "POST":
            if not request.user.has_perm("registries.change_registry"):
                raise PermissionDenied
            run = cleanup(self, request, found)
            target = "admin:registries_retentionpolicy_dry_run"
            if run is not None:
                target = "admin:registries_retentionrun_change"
            return HttpResponseRedirect(
                reverse(target, args=[run.pk if run is not None else found.pk])
            )
        policy, source = policy_for(found.cluster_id)
        return TemplateResponse(
            request,
            "admin/registries/retentionpolicy/dry_run.html",
            {
                **self.admin_site.each_context(request),
                "opts": Registry._meta,
                "title": f"Retention dry run: {found.namespace}",
                "registry": found,
                "policy": policy,
                "source": source,
                "plan": retention_plan(found),
                "can_run": request.user.has_perm("registries.change_registry"),
            },
        )


def cleanup(model_admin: Any, request: HttpRequest, registry: Registry) -> RetentionRun | None:
    """Run the registry's policy now, and say how it went."""
    try:
        run = retention_apply(registry, trigger=RetentionTrigger.MANUAL)
    except (RegistryNotReady, RetentionRunning) as exc:
        model_admin.message_user(request, f"Registry {registry}: {exc}", messages.WARNING)
        return None
    tags = sum(len(entry["tags"]) for entry in run.deleted)
    level = messages.SUCCESS if not run.errors else messages.WARNING
    model_admin.message_user(
        request,
        f"Registry {registry}: {tags} tag{'' if tags == 1 else 's'} deleted, "
        f"{humanize.size(run.freed_bytes or 0)} freed, {len(run.errors)} error(s).",
        level,
    )
    return run


@admin.action(
    description="Clean up selected registries now (their retention policy)",
    permissions=["change"],
)
def cleanup_now(model_admin: Any, request: HttpRequest, queryset: QuerySet[Registry]) -> None:
    """The registry page's action: each registry's policy applied now (a manual run)."""
    for registry in queryset:
        cleanup(model_admin, request, registry)


def dry_run_link(registry: Registry) -> SafeString:
    """The registry page's link to its dry run."""
    return format_html(
        '<a class="retention-dry-run-link" href="{}">What its retention policy deletes now</a>',
        reverse("admin:registries_retentionpolicy_dry_run", args=[registry.pk]),
    )


@admin.register(RetentionRun)
class RetentionRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at", "registry", "trigger", "state", "tags_deleted", "freed", "error_count",
        "finished_at",
    ]  # fmt: skip
    list_select_related = ["registry"]
    list_filter = ["state", "trigger"]
    search_fields = ["registry__namespace"]
    date_hierarchy = "started_at"

    @admin.display(description="tags deleted")
    def tags_deleted(self, run: RetentionRun) -> int:
        return sum(len(entry["tags"]) for entry in run.deleted)

    @admin.display(description="freed")
    def freed(self, run: RetentionRun) -> str:
        return humanize.size(run.freed_bytes)

    @admin.display(description="errors")
    def error_count(self, run: RetentionRun) -> int:
        return len(run.errors)
