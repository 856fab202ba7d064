"""Agents authenticate with their cluster agent token, as buildkite-agent does with the Agent API:
``Authorization: Token <secret>`` (``Bearer`` is accepted too), from an address inside the
token's IP allow-list (``allowed_ip_addresses``; 403 otherwise)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from clusters import ip_allow_lists
from clusters.models import ClusterAgentToken
from clusters.selectors import agent_token_authenticate
from controlplane.api.authentication import authorization_secret
from controlplane.api.client_ip import client_ip

#: The Authorization schemes an agent token comes with, lower case.
SCHEMES = frozenset({"token", "bearer"})
MALFORMED = "Send the cluster agent token as 'Authorization: Token <token>'."
BAD_TOKEN = "Invalid, expired or revoked agent token."  # noqa: S105 - a message
WWW_AUTHENTICATE = 'Token realm="agent"'
logger = logging.getLogger("clusters.agent")


class AgentTokenLike(Protocol):
    """An agent token, or what a cache keeps of one (``clusters.selectors.AgentTokenFacts``)."""

    @property
    def pk(self) -> Any: ...

    @property
    def cluster_id(self) -> Any: ...

    @property
    def allowed_ip_addresses(self) -> str: ...


@dataclass(frozen=True)
class AgentPrincipal:
    """The caller of an agent endpoint: whoever holds ``token``."""

    token: ClusterAgentToken
    is_authenticated: bool = True


class AddressNotAllowed(exceptions.PermissionDenied):
    """403: an agent token (or a credential made from it) used from outside its allow-list."""


def agent_token_check_address(token: AgentTokenLike, request: Any) -> None:
    """Raise ``AddressNotAllowed`` (403, naming the address) unless ``token`` may be used from
    the address ``request`` comes from (``controlplane.api.client_ip``). Every endpoint that
    accepts the token, or a credential made from it, calls this."""
    address = client_ip(request)
    if ip_allow_lists.allows(token.allowed_ip_addresses, address):
        return
    logger.warning(
        "agent_token.address_refused",
        extra={"token_id": str(token.pk), "cluster_id": str(token.cluster_id), "address": address},
    )
    raise AddressNotAllowed(ip_allow_lists.refusal(address or "an unknown address"))


class ClusterAgentTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[AgentPrincipal, ClusterAgentToken] | None:
        secret = authorization_secret(request, schemes=SCHEMES, malformed=MALFORMED)
        if secret is None:
            return None
        token = agent_token_authenticate(secret)
        if token is None:
            raise exceptions.AuthenticationFailed(BAD_TOKEN)
        agent_token_check_address(token, request)
        return AgentPrincipal(token), token

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE
