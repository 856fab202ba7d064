"""The signing keys every process reads from the database, cached per process.

Each process signs with the newest key (``issued_at``) and accepts the older ones within their
windows (``registries.keys.acceptance_windows``). It looks at the database for the newest key id
no more often than ``REGISTRY_KEYS_RECHECK_SECONDS`` (one indexed ``SELECT ... LIMIT 1``, not one
per token), and reads the keys again only when that id changed: a rotation on any replica is
signed with everywhere within that bound. A refresh token naming a key id this process does not
know makes it look at once (at most once per ``UNKNOWN_KID_RECHECK_SECONDS``, so a flood of made-up
key ids costs one query a second), so a token signed on a replica that rotated first is accepted
here right away; a request that arrives while such a look is under way waits for it and uses what
it found. A change made by this process (``registry_keys``, the services) is used at once
(``forget``). A re-check that fails (the database unreachable for a moment) keeps serving the
keys already read, logged, and tries again after the next bound: a database blip does not fail
token requests that need no query.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import DatabaseError

from registries import key_encryption
from registries.keys import (
    SigningKey,
    SigningKeyMissing,
    SigningKeys,
    acceptance_windows,
    utc_now,
)
from registries.models import TokenSigningAuthority, TokenSigningKey

logger = logging.getLogger("registries.key_store")

INIT_COMMAND = "python manage.py registry_keys init"
#: How often a process may look at the database for a key id it does not know.
UNKNOWN_KID_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class _Loaded:
    keys: SigningKeys
    recheck_at: float


class KeyStore:
    """The signing keys in the database as this process last read them."""

    #: The clock the re-check bound is measured on (the tests move it).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unknown_lock = threading.Lock()
        self._cached: _Loaded | None = None
        self._unknown_checked_at: float | None = None

    def load(self, *, recheck: bool = False) -> SigningKeys:
        """The current key and the older ones still accepted. Raises ``SigningKeyMissing``.

        Warm: the keys last read, no query, until the re-check bound has passed (or
        ``recheck``); then the newest key id (one query), and the keys only if it changed. If
        that fails with a database error, the keys last read (logged) until the next bound."""
        cached = self._cached
        now = self.clock()
        if cached is not None and now < cached.recheck_at and not recheck:
            return cached.keys
        with self._lock:
            cached = self._cached
            if cached is not None and now < cached.recheck_at and not recheck:
                return cached.keys  # another thread looked while this one waited
            try:
                return self._refresh(cached, now)
            except DatabaseError as exc:
                if cached is None:
                    raise
                logger.warning(
                    "registry.keys.recheck_failed",
                    extra={"error": exc.__class__.__name__, "kid": cached.keys.current.kid},
                )
                recheck_at = now + float(settings.REGISTRY_KEYS_RECHECK_SECONDS)
                self._cached = _Loaded(cached.keys, recheck_at)
                return cached.keys

    def _refresh(self, cached: _Loaded | None, now: float) -> SigningKeys:
        newest = (
            TokenSigningKey.objects.order_by("-issued_at", "-id")
            .values_list("kid", flat=True)
            .first()
        )
        if newest is None:
            self._cached = None
            raise SigningKeyMissing(
                "The registry token service has no signing key in the database. Run "
                f"`python manage.py migrate` then `{INIT_COMMAND}` (it creates the CA the "
                "registry trusts and a signing key)."
            )
        unchanged = cached is not None and cached.keys.current.kid == newest
        keys = cached.keys if cached is not None and unchanged else _read()
        self._cached = _Loaded(keys, now + float(settings.REGISTRY_KEYS_RECHECK_SECONDS))
        return keys

    def public_key(self, kid: object) -> ec.EllipticCurvePublicKey | None:
        """The public key of ``kid`` if its signatures are accepted now; a key id this process
        does not know is looked up in the database (rate limited), in case another replica
        rotated. A request that arrives while another one looks waits for that look and uses
        what it found."""
        now = dt.datetime.now(dt.UTC)
        keys = self.load()
        found = keys.public_key(kid, now)
        if found is not None or not isinstance(kid, str) or self._known(keys, kid):
            return found
        with self._unknown_lock:
            keys = self.load()  # a look that finished while this request waited
            found = keys.public_key(kid, now)
            if found is not None or self._known(keys, kid):
                return found
            clock = self.clock()
            checked = self._unknown_checked_at
            if checked is not None and clock < checked + UNKNOWN_KID_RECHECK_SECONDS:
                return None
            self._unknown_checked_at = clock
            return self.load(recheck=True).public_key(kid, now)

    @staticmethod
    def _known(keys: SigningKeys, kid: str) -> bool:
        return kid == keys.current.kid or any(key.kid == kid for key in keys.older)

    def forget(self) -> None:
        """Read the keys again on the next ``load`` (this process changed them)."""
        self._cached = None

    def exists(self) -> bool:
        """Whether there is a key to sign with (one query)."""
        return TokenSigningKey.objects.exists()


def _read() -> SigningKeys:
    """The unexpired keys, newest first: the newest decrypted (it signs), the older ones'
    public keys from their certificates (they only verify)."""
    rows = list(
        TokenSigningKey.objects.filter(expires_at__gt=utc_now()).order_by("-issued_at", "-id")
    )
    if not rows:
        raise SigningKeyMissing(
            "Every registry token signing key in the database has expired: run "
            "`python manage.py registry_keys rotate` where the CA's private key is (the keys "
            "Job, `make run`; deploy/README.md)."
        )
    newest = rows[0]
    private_key = serialization.load_pem_private_key(
        key_encryption.decrypt(newest.encrypted_private_key, newest.kid), password=None
    )
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise SigningKeyMissing(f"Signing key {newest.kid} is not an EC key.")
    current = SigningKey(private_key, x509.load_pem_x509_certificate(newest.certificate.encode()))
    issued = []
    for row in rows:
        public_key = x509.load_pem_x509_certificate(row.certificate.encode()).public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            issued.append((row.kid, public_key, row.issued_at, row.expires_at))
    return SigningKeys(current=current, older=acceptance_windows(issued))


def ca_certificate_pem() -> bytes | None:
    """The CA certificate recorded in the database (public), None before ``init``."""
    authority = TokenSigningAuthority.objects.first()
    return None if authority is None else authority.certificate.encode()


_store = KeyStore()


def key_store() -> KeyStore:
    """This process's key store."""
    return _store
