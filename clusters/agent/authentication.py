"""Agents authenticate with their cluster agent token, as buildkite-agent does with the Agent API:
``Authorization: Token <secret>`` (``Bearer`` is accepted too)."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from clusters.models import ClusterAgentToken
from clusters.selectors import agent_token_authenticate
from controlplane.api.authentication import authorization_secret

_SCHEMES = {"token", "bearer"}


@dataclass(frozen=True)
class AgentPrincipal:
    """The caller of an agent endpoint: whoever holds ``token``."""

    token: ClusterAgentToken
    is_authenticated: bool = True


class ClusterAgentTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[AgentPrincipal, ClusterAgentToken] | None:
        secret = authorization_secret(
            request,
            schemes=_SCHEMES,
            malformed="Send the cluster agent token as 'Authorization: Token <token>'.",
        )
        if secret is None:
            return None
        token = agent_token_authenticate(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked agent token.")
        return AgentPrincipal(token), token

    def authenticate_header(self, request: Request) -> str:
        return 'Token realm="agent"'
