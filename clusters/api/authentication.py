"""REST API callers authenticate with an API access token: ``Authorization: Bearer <token>``,
as on Buildkite (HTTP Basic is not accepted)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from clusters.actors import api_token_actor, request_context
from clusters.audit import act_as
from clusters.models import ApiToken
from clusters.selectors import api_token_authenticate
from controlplane.api.authentication import authorization_secret

BEARER_TOKEN_REQUIRED = "Send an API access token as 'Authorization: Bearer <token>'."  # noqa: S105 - a message


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[object, ApiToken] | None:
        secret = authorization_secret(request, schemes={"bearer"}, malformed=BEARER_TOKEN_REQUIRED)
        if secret is None:
            return None
        token = api_token_authenticate(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API access token.")
        # The token is the actor of the request's writes (clusters.audit), for the rest of the
        # request (AuditActorMiddleware's scope). The fast path authenticates without this
        # class: it answers plain reads, which write nothing.
        act_as(api_token_actor(token), request_context(request, "ApiContext"))
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """How the OpenAPI schema describes the authentication (drf-spectacular finds it by class)."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API access token (`manage.py create_api_token`, or the admin).",
        }
