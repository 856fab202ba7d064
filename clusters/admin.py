"""Operators' view of organizations, clusters, queues, agent tokens and agent environments.

Additions go through ``clusters.services`` so that a hosted queue created here provisions a
registry exactly as one created through the API does. The webhook's secrets and deliveries are
in ``clusters.webhooks.admin``, registered by importing it here (Django's admin autodiscovery
imports only this module).
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms import ChoiceField, ModelForm
from django.http import HttpRequest

from clusters import instance_shapes, services
from clusters.audit import AuditEvent
from clusters.models import (
    AgentEnvironmentVariable,
    ApiScope,
    ApiToken,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
)
from clusters.secret_admin import TokenAdmin
from clusters.webhooks import admin as webhooks_admin  # noqa: F401 - registers the webhook's admin
from controlplane.admin import NoDeleteAdmin, ReadOnlyAdmin, ReadOnlyTabularInline, adopt


@admin.register(Organization)
class OrganizationAdmin(NoDeleteAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["slug", "created_at"] if obj else ["created_at"]

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            obj.save()
        else:
            adopt(obj, services.organization_create(slug=obj.slug, name=obj.name))


class QueueInline(ReadOnlyTabularInline):
    model = Queue
    fk_name = "cluster"
    fields = readonly_fields = ("key", "instance_shape", "description", "created_at")


class AgentEnvironmentInline(ReadOnlyTabularInline):
    model = AgentEnvironmentVariable
    fields = readonly_fields = ("name", "value", "source", "updated_at")
    show_change_link = False


@admin.register(Cluster)
class ClusterAdmin(NoDeleteAdmin):
    list_display = ["name", "organization", "id", "created_at"]
    list_filter = ["organization"]
    search_fields = ["name", "id", "organization__slug"]
    list_select_related = ["organization"]
    inlines = [QueueInline, AgentEnvironmentInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["id", "organization", "created_at"] if obj else ["id", "created_at"]

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A new cluster has no queues to choose a default from.
        return [] if obj else ["default_queue"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "default_queue":
            match = request.resolver_match
            cluster_id = match.kwargs.get("object_id") if match else None
            kwargs["queryset"] = Queue.objects.filter(cluster_id=cluster_id) if cluster_id else []
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            data = form.cleaned_data
            services.cluster_update(
                cluster=obj,
                name=data["name"],
                description=data["description"],
                emoji=data["emoji"],
                color=data["color"],
                default_queue=data["default_queue"],
            )
            return
        adopt(
            obj,
            services.cluster_create(
                organization=obj.organization,
                name=obj.name,
                description=obj.description,
                emoji=obj.emoji,
                color=obj.color,
            ),
        )

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return super().get_inline_instances(request, obj) if obj else []


class QueueChangeForm(ModelForm[Queue]):
    """Offers only the shapes the queue may take: same machine type and architecture, or none
    for a self-hosted queue (queues never convert)."""

    class Meta:
        model = Queue
        fields = ["description", "instance_shape", "agent_image_ref", "retry_agent_affinity"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.instance_shape
        field = cast(ChoiceField, self.fields["instance_shape"])
        field.choices = [
            (name, name or "(self-hosted)")
            for name in ["", *instance_shapes.SHAPES]
            if services.queue_shape_change_error(current, name) is None
        ]

    def clean_instance_shape(self) -> str:
        # An empty choice is valid for a ChoiceField whatever its choices: check it here too.
        shape: str = self.cleaned_data["instance_shape"]
        if error := services.queue_shape_change_error(self.instance.instance_shape, shape):
            raise ValidationError(error)
        return shape


@admin.register(Queue)
class QueueAdmin(NoDeleteAdmin):
    list_display = ["key", "cluster", "instance_shape", "created_at"]
    list_filter = ["instance_shape", "cluster__organization"]
    search_fields = ["key", "cluster__name", "id"]
    list_select_related = ["cluster__organization"]

    paused_fields = [
        "dispatch_paused", "dispatch_paused_at", "dispatch_paused_by", "dispatch_paused_note",
    ]  # fmt: skip

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["cluster", "key", "description", "instance_shape", "retry_agent_affinity"]
        return [
            "id", "cluster", "key", *QueueChangeForm.Meta.fields, *self.paused_fields,
            "created_at", "created_by",
        ]  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["id", "cluster", "key", *self.paused_fields, "created_at", "created_by"]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm[Any]]:
        if obj is not None:
            kwargs["form"] = QueueChangeForm
        return super().get_form(request, obj, change, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            services.queue_update(
                queue=obj,
                description=form.cleaned_data["description"],
                instance_shape=form.cleaned_data["instance_shape"],
                agent_image_ref=form.cleaned_data["agent_image_ref"],
                retry_agent_affinity=form.cleaned_data["retry_agent_affinity"],
            )
            return
        adopt(
            obj,
            services.queue_create(
                cluster=obj.cluster,
                key=obj.key,
                description=obj.description,
                instance_shape=obj.instance_shape,
                retry_agent_affinity=obj.retry_agent_affinity,
                created_by=request.user if request.user.is_authenticated else None,
            ),
        )


@admin.register(ClusterAgentToken)
class ClusterAgentTokenAdmin(TokenAdmin):
    list_display = ["description", "token_prefix", "cluster", "expires_at", "revoked_at", "active"]
    list_filter = ["cluster__organization"]
    search_fields = ["description", "token_prefix", "cluster__name"]
    list_select_related = ["cluster__organization"]
    secret_id = "agent-token-secret"  # noqa: S105 - an HTML id

    def describe_scope(self, obj: ClusterAgentToken) -> str:
        return f"cluster {obj.cluster}"

    def revoke_token(self, token: ClusterAgentToken) -> None:
        services.agent_token_revoke(token=token)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj:
            return [
                "id", "cluster", "token_prefix", "expires_at", "revoked_at", "created_at",
                "created_by",
            ]  # fmt: skip
        return []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj:
            return super().get_fields(request, obj)
        return ["cluster", "description", "expires_at", "allowed_ip_addresses"]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        """Left empty, the allow-list is every address on creation, and unchanged on a change."""
        form = super().get_form(request, obj, change, **kwargs)
        if "allowed_ip_addresses" in form.base_fields:
            form.base_fields["allowed_ip_addresses"].required = False
        return form

    @admin.display(boolean=True)
    def active(self, obj: ClusterAgentToken) -> bool:
        return obj.is_active

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            services.agent_token_update(
                token=obj,
                description=form.cleaned_data["description"],
                allowed_ip_addresses=form.cleaned_data["allowed_ip_addresses"] or None,
            )
            return
        token, secret = services.agent_token_create(
            cluster=obj.cluster,
            description=obj.description,
            expires_at=obj.expires_at,
            allowed_ip_addresses=obj.allowed_ip_addresses or None,
            created_by=request.user if request.user.is_authenticated else None,
        )
        adopt(obj, token)
        request._created_secret = secret  # type: ignore[attr-defined]


@admin.register(AgentEnvironmentVariable)
class AgentEnvironmentVariableAdmin(ReadOnlyAdmin):
    list_display = ["name", "value", "source", "cluster", "updated_at"]
    list_filter = ["source"]
    search_fields = ["name", "cluster__name"]
    list_select_related = ["cluster__organization"]


class ApiTokenForm(forms.ModelForm[ApiToken]):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiToken
        fields = ["user", "organization", "description", "scopes"]


@admin.register(ApiToken)
class ApiTokenAdmin(TokenAdmin):
    """REST API access tokens: created here (or ``manage.py create_api_token``), revoked, never
    edited: a token's owner, organization and scopes are what it was issued with."""

    form = ApiTokenForm
    list_display = ["description", "token_prefix", "user", "organization", "scopes", "revoked_at"]
    list_filter = ["organization"]
    search_fields = ["description", "token_prefix", "user__username"]
    list_select_related = ["user", "organization"]
    secret_id = "api-token-secret"  # noqa: S105 - an HTML id

    def describe_scope(self, obj: ApiToken) -> str:
        return f"organization {obj.organization}, scopes {', '.join(obj.scopes)}"

    def revoke_token(self, token: ApiToken) -> None:
        services.api_token_revoke(token=token)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj:
            return [
                "id", "user", "organization", "description", "scopes", "token_prefix",
                "created_at", "revoked_at",
            ]  # fmt: skip
        return []

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj:  # read-only: the default form of the model, with every field read-only
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            return
        token, secret = services.api_token_create(
            user=form.cleaned_data["user"],
            organization=form.cleaned_data["organization"],
            description=form.cleaned_data["description"],
            scopes=form.cleaned_data["scopes"],
        )
        adopt(obj, token)
        request._created_secret = secret  # type: ignore[attr-defined]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit log, read-only: who changed what, newest first (``clusters.audit``)."""

    list_display = [
        "occurred_at", "type", "organization", "actor_type", "actor_name", "subject_type",
        "subject_name",
    ]  # fmt: skip
    list_filter = ["type", "actor_type", "subject_type", "organization"]
    search_fields = ["type", "actor_name", "actor_uuid", "subject_name", "subject_uuid"]
    date_hierarchy = "occurred_at"
    list_select_related = ["organization"]
    readonly_fields = [
        "uuid", "occurred_at", "organization", "type", "actor_type", "actor_uuid", "actor_name",
        "subject_type", "subject_uuid", "subject_name", "data", "context",
    ]  # fmt: skip
    show_full_result_count = False  # a long log: no second COUNT(*) on every page
