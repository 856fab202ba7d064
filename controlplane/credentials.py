"""Secrets shown once, as every kind of token here makes, stores and revokes them (agent tokens,
API tokens, webhook secrets, job credentials): a recognisable prefix and 256 random bits, stored
only as a SHA-256, listed by their prefix, revoked once."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Protocol

from django.utils import timezone

from controlplane import hotcache


def secret_hash(secret: str) -> str:
    """How token secrets are stored. They have 256 bits of entropy, so a fast hash is enough,
    and it keeps the lookup an indexed equality."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    """A secret shown once: ``prefix`` (so that secret scanners recognise it) and 256 random
    bits."""
    return prefix + secrets.token_urlsafe(32)


def shown_prefix(secret: str, prefix: str) -> str:
    """What is kept of a secret to tell it apart in lists: its prefix and four characters."""
    return secret[: len(prefix) + 4]


class _Revocable(Protocol):
    pk: Any
    objects: Any

    def refresh_from_db(self, *, fields: list[str]) -> None: ...


def revoke_once(obj: _Revocable) -> bool:
    """Set ``revoked_at`` once, atomically (a second revocation keeps the first time), and drop
    what the hot paths cached of ``obj`` (``controlplane.hotcache``: an update sends no signal).
    Whether this call revoked it (False: it was revoked already)."""
    revoked = (
        type(obj)
        .objects.filter(pk=obj.pk, revoked_at__isnull=True)
        .update(revoked_at=timezone.now())
    )
    hotcache.invalidate(hotcache.row_tag(type(obj), obj.pk))
    obj.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)
