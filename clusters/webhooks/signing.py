"""Verifying the platform's webhook deliveries (Buildkite's scheme), and the organization's
webhook secrets.

A delivery is verified with one of the organization's active webhook secrets, in either of
Buildkite's two modes:

- ``X-Buildkite-Signature: timestamp=<unix seconds>,signature=<hex HMAC-SHA256>`` of
  ``"<timestamp>.<raw body>"``, refused when the timestamp is more than five minutes away;
- ``X-Buildkite-Token: <secret>``, the secret itself (no timestamp: only the delivery id and
  idempotent events stop a replay).

Comparisons are constant-time. Secrets are derived from each ``WebhookSecret.salt`` with the
service's key and never stored.

``verify`` reads no database when warm: each organization's active secrets (derived) are cached
per process (``controlplane.hotcache``) for ``HOT_CACHE_SECONDS`` at most, and dropped at once in
the process that creates or revokes one; other processes see the change within that bound. A
forged delivery costs one HMAC per active secret. What applies a delivery loads the secret's row
again (``verified_secret``), so a secret revoked anywhere applies nothing more at once; within
the bound, it can still be answered a refusal or the recorded answer to a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.crypto import salted_hmac

from clusters import locks
from clusters.models import SLUG_PATTERN, Organization, WebhookSecret
from clusters.services.audit import audit_record
from clusters.services.credentials import revoke
from controlplane import hotcache
from controlplane.credentials import shown_prefix

# The logger the webhook's services have always logged under, so their log lines are unchanged.
logger = logging.getLogger("clusters.services")

SECRET_PREFIX = "bkwh_"  # noqa: S105 - a marker for secret scanners, not a secret
SIGNATURE_HEADER = "X-Buildkite-Signature"
TOKEN_HEADER = "X-Buildkite-Token"  # noqa: S105 - a header name
#: How far a signature's timestamp may be from now, either way.
TOLERANCE_SECONDS = 300
_SIGNATURE = re.compile(
    r"^timestamp=(?P<timestamp>\d{1,12}),signature=(?P<signature>[0-9a-f]{64})$"
)
MAX_ACTIVE_WEBHOOK_SECRETS = 2


class WebhookRefused(Exception):
    """The delivery is not accepted; ``status`` and ``message`` are the answer, ``reason`` what
    ``controlplane_webhook_refusals_total`` counts it as."""

    def __init__(self, status: int, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def new_salt() -> str:
    return secrets.token_hex(32)


def secret_for(salt: str) -> str:
    """The secret of a ``WebhookSecret`` with this salt, derived with the service's key."""
    # The key salt is the module's name before the webhook became a package: changing it would
    # change every organization's secret.
    digest = salted_hmac(
        "clusters.webhooks.secret", salt, secret=settings.SECRET_KEY, algorithm="sha256"
    )
    return SECRET_PREFIX + digest.hexdigest()[:48]


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Buildkite-Signature`` value for ``body`` at ``timestamp``."""
    return f"timestamp={timestamp},signature={_digest(secret.encode(), timestamp, body)}"


@dataclass(frozen=True)
class Verified:
    secret: WebhookSecret
    method: str  # "signature" or "token"
    signature: str | None = None  # the HMAC, in signature mode


@dataclass(frozen=True, slots=True)
class Signed:
    """What ``verify`` found, from the cache: the organization, which of its secrets vouches for
    the delivery, and how (``Verified`` without the rows)."""

    organization_id: int
    secret_id: uuid.UUID
    method: str  # "signature" or "token"
    signature: str | None = None  # the HMAC, in signature mode


@dataclass(frozen=True, slots=True)
class _Secrets:
    """An organization's active webhook secrets, derived: ``(WebhookSecret id, secret)``."""

    organization_id: int
    secrets: tuple[tuple[uuid.UUID, bytes], ...]


_SECRETS: hotcache.HotCache[_Secrets] = hotcache.HotCache("webhook-secrets")
_NONE = _Secrets(0, ())
_INVALID = {"signature": "Invalid signature.", "token": "Invalid token."}


def secrets_tag(org_slug: str) -> str:
    """The hot-cache tag of the organization's webhook secrets."""
    return f"webhook-secrets:{org_slug}"


def _organization_secrets(org_slug: str) -> _Secrets:
    """The active secrets of organization ``org_slug``, from the process's cache or read once.
    An organization without any is not cached (a secret created in another process works at
    once). A slug that cannot exist is looked up nowhere."""
    cached = _SECRETS.get(org_slug)
    if cached is not None:
        return cached
    if not re.fullmatch(SLUG_PATTERN, org_slug):
        return _NONE
    since = hotcache.fill_started()
    rows = list(
        WebhookSecret.objects.active()
        .filter(organization__slug=org_slug)
        .values_list("organization_id", "pk", "salt")
    )
    if not rows:
        return _NONE
    found = _Secrets(rows[0][0], tuple((pk, secret_for(salt).encode()) for _, pk, salt in rows))
    _SECRETS.put(org_slug, found, since=since, tags=[secrets_tag(org_slug)])
    return found


def verify(org_slug: str, headers: Any, body: bytes, now: float) -> Signed:
    """Which active secret of the organization ``org_slug`` vouches for this delivery; raises
    ``WebhookRefused`` (401) otherwise. An unknown organization is refused the same way as a
    wrong secret, so the endpoint does not tell which organizations exist."""
    signature, token = headers.get(SIGNATURE_HEADER), headers.get(TOKEN_HEADER)
    if signature:
        match = _SIGNATURE.match(signature.strip())
        if match is None:
            raise WebhookRefused(
                401, f"Malformed {SIGNATURE_HEADER}: expected timestamp=<unix seconds>,"
                "signature=<hex HMAC-SHA256>.", "malformed",
            )  # fmt: skip
        timestamp = int(match["timestamp"])
        if abs(now - timestamp) > TOLERANCE_SECONDS:
            raise WebhookRefused(
                401,
                f"The signature's timestamp is {abs(now - timestamp):.0f} seconds away from now; "
                f"deliveries more than {TOLERANCE_SECONDS} seconds old (or ahead) are refused.",
                "stale",
            )
        found = _organization_secrets(org_slug)
        for secret_id, secret in found.secrets:
            if hmac.compare_digest(_digest(secret, timestamp, body), match["signature"]):
                return Signed(found.organization_id, secret_id, "signature", match["signature"])
        raise WebhookRefused(401, _INVALID["signature"], "signature")
    if token:
        offered = token.strip().encode("utf-8", "backslashreplace")  # any text: compare bytes
        found = _organization_secrets(org_slug)
        for secret_id, secret in found.secrets:
            if hmac.compare_digest(secret, offered):
                return Signed(found.organization_id, secret_id, "token")
        raise WebhookRefused(401, _INVALID["token"], "token")
    raise WebhookRefused(
        401,
        f"Sign the delivery ({SIGNATURE_HEADER}) or send the webhook token ({TOKEN_HEADER}).",
        "unsigned",
    )


def verified_secret(signed: Signed) -> Verified:
    """The secret that vouched for a delivery, read again (with its organization) before the
    delivery is applied: a secret revoked since this process cached it is refused (401) here."""
    secret = (
        WebhookSecret.objects.active()
        .select_related("organization")
        .filter(pk=signed.secret_id)
        .first()
    )
    if secret is None:
        raise WebhookRefused(401, _INVALID[signed.method], signed.method)
    return Verified(secret, signed.method, signed.signature)


# --- the organization's webhook secrets ---------------------------------------------------------


def webhook_secret_create(
    *, organization: Organization, description: str
) -> tuple[WebhookSecret, str]:
    """A new webhook secret for the organization; returns it and the secret, shown once.

    At most two are active at a time: add the new one, switch the platform to it, then revoke
    the old one, and no delivery is refused on the way.
    """
    with transaction.atomic():
        locks.organization_lock(organization.pk)
        if error := webhook_secret_limit_error(organization):
            raise ValidationError(error)
        salt = new_salt()
        secret = secret_for(salt)
        webhook_secret = WebhookSecret(
            organization=organization,
            description=description,
            salt=salt,
            secret_prefix=shown_prefix(secret, SECRET_PREFIX),
        )
        webhook_secret.full_clean()
        webhook_secret.save()
        audit_record(
            type="WEBHOOK_SECRET_CREATED",
            organization=organization,
            subject_type="WEBHOOK_SECRET",
            subject_uuid=webhook_secret.pk,
            subject_name=description,
            data={"description": description},
        )
        hotcache.invalidate(secrets_tag(organization.slug))
    logger.info(
        "webhook_secret.created",
        extra={"secret_id": str(webhook_secret.pk), "organization": organization.slug},
    )
    return webhook_secret, secret


def webhook_secret_limit_error(organization: Organization) -> str | None:
    """Why the organization cannot have another webhook secret now, or None if it can."""
    active = WebhookSecret.objects.active().filter(organization=organization).count()
    if active < MAX_ACTIVE_WEBHOOK_SECRETS:
        return None
    return (
        f"{organization.slug} already has {active} active webhook secrets; revoke one before "
        "adding another."
    )


def webhook_secret_revoke(*, secret: WebhookSecret) -> WebhookSecret:
    """Stop accepting deliveries signed with this secret: at once in this process and for
    applying a delivery anywhere; within ``HOT_CACHE_SECONDS`` for other processes' refusals
    and repeats (see the module's docstring)."""
    revoked = revoke(
        secret,
        "webhook_secret.revoked",
        "secret_id",
        audit_type="WEBHOOK_SECRET_DELETED",
        subject_type="WEBHOOK_SECRET",
        organization_id=secret.organization_id,
    )
    hotcache.invalidate(secrets_tag(secret.organization.slug))
    return revoked
