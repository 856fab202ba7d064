"""Credentials: cluster agent tokens and REST API access tokens, and what every secret the
service issues shares (how a secret is made, what is kept of it, how it is revoked).

A secret is shown once, in the response to its creation: only its hash (or, for webhook secrets,
a salt) and a short prefix that tells it apart in lists are stored.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from clusters import ip_allow_lists
from clusters.models import ApiToken, Cluster, ClusterAgentToken, Organization, WebhookSecret
from clusters.services.audit import audit_record, changes, snapshot
from controlplane.credentials import new_secret, revoke_once, shown_prefix

logger = logging.getLogger("clusters.services")

AGENT_TOKEN_PREFIX = "bkct_"  # noqa: S105 - a marker for secret scanners, not a secret
API_TOKEN_PREFIX = "bkua_"  # noqa: S105 - the same, for API access tokens


Revocable = TypeVar("Revocable", ClusterAgentToken, ApiToken, WebhookSecret)


#: What the audit log shows of each credential: never its secret, hash, salt or shown prefix.
AGENT_TOKEN_FIELDS = ("description", "expires_at", "allowed_ip_addresses")
API_TOKEN_FIELDS = ("description", "scopes", "user")


def revoke(
    obj: Revocable,
    event: str,
    id_name: str,
    *,
    audit_type: str,
    subject_type: str,
    organization_id: int,
) -> Revocable:
    """Set ``revoked_at`` once, atomically (a second revocation keeps the first time), record
    ``audit_type`` in the same transaction, and log ``event`` with the row's id as ``id_name``.
    Revoking a revoked credential changes nothing and records nothing."""
    with transaction.atomic():
        if revoke_once(obj):
            audit_record(
                type=audit_type,
                organization=organization_id,
                subject_type=subject_type,
                subject_uuid=obj.pk,
                subject_name=obj.description,
                data={"revoked_at": obj.revoked_at.isoformat() if obj.revoked_at else None},
            )
    logger.info(event, extra={id_name: str(obj.pk)})
    return obj


def _agent_token_audit(token: ClusterAgentToken, type: str, data: dict[str, Any]) -> None:
    audit_record(
        type=type,
        organization=token.cluster.organization_id,
        subject_type="CLUSTER_TOKEN",
        subject_uuid=token.pk,
        subject_name=token.description,
        data={"cluster_id": str(token.cluster_id), **data},
    )


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
    with transaction.atomic():
        token.save()
        _agent_token_audit(token, "CLUSTER_TOKEN_CREATED", snapshot(token, *AGENT_TOKEN_FIELDS))
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
    before = snapshot(token, *AGENT_TOKEN_FIELDS)
    if description is not None:
        token.description = description
    if allowed_ip_addresses is not None:
        token.allowed_ip_addresses = _allow_list(allowed_ip_addresses)
    token.full_clean()
    with transaction.atomic():
        token.save(update_fields=["description", "allowed_ip_addresses"])
        after = snapshot(token, *AGENT_TOKEN_FIELDS)
        _agent_token_audit(token, "CLUSTER_TOKEN_UPDATED", changes(before, after))
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
    return revoke(
        token,
        "agent_token.revoked",
        "token_id",
        audit_type="CLUSTER_TOKEN_DELETED",
        subject_type="CLUSTER_TOKEN",
        organization_id=token.cluster.organization_id,
    )


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
    with transaction.atomic():
        token.save()
        audit_record(
            type="API_ACCESS_TOKEN_CREATED",
            organization=organization,
            subject_type="API_ACCESS_TOKEN",
            subject_uuid=token.pk,
            subject_name=token.description,
            data=snapshot(token, *API_TOKEN_FIELDS),
        )
    logger.info(
        "api_token.created",
        extra={"token_id": str(token.pk), "organization": organization.slug, "user_id": user.pk},
    )
    return token, secret


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke an API token at once; revoking a revoked token changes nothing."""
    return revoke(
        token,
        "api_token.revoked",
        "token_id",
        audit_type="API_ACCESS_TOKEN_DELETED",
        subject_type="API_ACCESS_TOKEN",
        organization_id=token.organization_id,
    )
