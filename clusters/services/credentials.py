"""Credentials: cluster agent tokens and REST API access tokens, and what every secret the
service issues shares (how a secret is made, what is kept of it, how it is revoked).

A secret is shown once, in the response to its creation: only its hash (or, for webhook secrets,
a salt) and a short prefix that tells it apart in lists are stored.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TypeVar

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone

from clusters import ip_allow_lists
from clusters.models import ApiToken, Cluster, ClusterAgentToken, Organization, WebhookSecret
from controlplane.credentials import new_secret, revoke_once, shown_prefix

logger = logging.getLogger("clusters.services")

AGENT_TOKEN_PREFIX = "bkct_"  # noqa: S105 - a marker for secret scanners, not a secret
API_TOKEN_PREFIX = "bkua_"  # noqa: S105 - the same, for API access tokens


Revocable = TypeVar("Revocable", ClusterAgentToken, ApiToken, WebhookSecret)


def revoke(obj: Revocable, event: str, id_name: str) -> Revocable:
    """Set ``revoked_at`` once, atomically (a second revocation keeps the first time), and log
    ``event`` with the row's id as ``id_name``."""
    revoke_once(obj)
    logger.info(event, extra={id_name: str(obj.pk)})
    return obj


def agent_token_create(
    *,
    cluster: Cluster,
    description: str,
    expires_at: datetime | None = None,
    allowed_ip_addresses: str | None = None,
    created_by: User | None = None,
) -> tuple[ClusterAgentToken, str]:
    """Create an agent token. Returns the token and its secret, which is never stored.
    ``allowed_ip_addresses`` (space-separated IPv4 CIDR blocks) restricts where it may be used
    from; by default, any address (``0.0.0.0/0``)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "Must be in the future."})
    secret = new_secret(AGENT_TOKEN_PREFIX)
    token = ClusterAgentToken(
        cluster=cluster,
        description=description,
        expires_at=expires_at,
        allowed_ip_addresses=_allow_list(allowed_ip_addresses),
        token_hash=ClusterAgentToken.hash_secret(secret),
        token_prefix=shown_prefix(secret, AGENT_TOKEN_PREFIX),
        created_by=created_by,
    )
    token.full_clean()
    token.save()
    logger.info(
        "agent_token.created", extra={"cluster_id": str(cluster.pk), "token_id": str(token.pk)}
    )
    return token, secret


def agent_token_update(
    *,
    token: ClusterAgentToken,
    description: str | None = None,
    allowed_ip_addresses: str | None = None,
) -> ClusterAgentToken:
    """Change a token's description or its IP allow-list (what is not None). Its secret and
    expiry never change. A narrower allow-list applies to the token's next use."""
    if description is not None:
        token.description = description
    if allowed_ip_addresses is not None:
        token.allowed_ip_addresses = _allow_list(allowed_ip_addresses)
    token.full_clean()
    token.save(update_fields=["description", "allowed_ip_addresses"])
    return token


def _allow_list(value: str | None) -> str:
    """``value`` normalized (``ip_allow_lists.normalized``); None is every address."""
    if value is None:
        return ip_allow_lists.ANY_ADDRESS
    try:
        return ip_allow_lists.normalized(value)
    except ValidationError as exc:
        raise ValidationError({ip_allow_lists.FIELD: exc.messages}) from exc


def agent_token_revoke(*, token: ClusterAgentToken) -> ClusterAgentToken:
    """Revoke a token at once; revoking a revoked token changes nothing."""
    return revoke(token, "agent_token.revoked", "token_id")


def api_token_create(
    *, user: User, organization: Organization, description: str, scopes: list[str]
) -> tuple[ApiToken, str]:
    """Create a REST API access token. Returns the token and its secret, which is never stored."""
    secret = new_secret(API_TOKEN_PREFIX)
    token = ApiToken(
        user=user,
        organization=organization,
        description=description,
        scopes=list(dict.fromkeys(scopes)),
        token_hash=ApiToken.hash_secret(secret),
        token_prefix=shown_prefix(secret, API_TOKEN_PREFIX),
    )
    token.full_clean()
    token.save()
    logger.info(
        "api_token.created",
        extra={"token_id": str(token.pk), "organization": organization.slug, "user_id": user.pk},
    )
    return token, secret


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke an API token at once; revoking a revoked token changes nothing."""
    return revoke(token, "api_token.revoked", "token_id")
