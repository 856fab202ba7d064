"""The console's base for credentials whose secret is shown once: cluster agent tokens, API
access tokens (``clusters.admin``) and webhook secrets (``clusters.webhooks.admin``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from controlplane.admin import NoDeleteAdmin
from controlplane.api.caching import no_store


class TokenAdmin(NoDeleteAdmin):
    """The admin of a token whose secret is shown once, in the response to its creation, and
    which is revoked, never deleted.

    ``save_model`` puts the secret on the request; ``response_add`` renders it into that one
    response and nowhere else (not the session, not a message cookie).
    """

    secret_id: str
    actions = ["revoke"]

    def describe_scope(self, obj: Any) -> str:
        raise NotImplementedError

    def revoke_token(self, token: Any) -> None:
        raise NotImplementedError

    def response_add(
        self, request: HttpRequest, obj: Any, post_url_continue: Any = None
    ) -> HttpResponse:
        response = TemplateResponse(
            request,
            "admin/clusters/secret_created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "token": obj,
                "scope": self.describe_scope(obj),
                "secret": request._created_secret,  # type: ignore[attr-defined]
                "secret_id": self.secret_id,
                "title": f"{str(self.opts.verbose_name).capitalize()} created",
            },
        )
        return no_store(response)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for token in queryset:
            self.revoke_token(token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)
