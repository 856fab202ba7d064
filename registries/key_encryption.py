"""The key-encryption key (KEK) the signing keys' private keys are encrypted with in the database.

``REGISTRY_KEYS_ENCRYPTION_KEYS``: comma-separated Fernet keys (``Fernet.generate_key()``). The
first encrypts; every one of them decrypts, so the KEK itself is rotated by putting a new key
first, running ``registry_keys reencrypt``, then dropping the old one (``MultiFernet``). Unset, the
KEK is derived from ``DJANGO_SECRET_KEY`` with HKDF-SHA256 (an info string of its own, so the
derived key is no other use's), which every replica already shares: ``make run`` needs no new
setting. The derived key always stays the last, decrypt-only entry, also when the setting is
set: an operator cannot write it into the setting, so this is what lets an install move from the
derived KEK to an explicit one (set it, ``registry_keys reencrypt``) without a moment in which the
keys cannot be read. Nothing here logs or returns key material in an error message.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from registries.keys import SigningKeyMissing

#: HKDF's ``info``: what the derived key is for (another derivation from the same secret key,
#: with another info, gives an unrelated key).
HKDF_INFO = b"controlplane registry signing keys KEK v1"
SETTING = "REGISTRY_KEYS_ENCRYPTION_KEYS"
GENERATE = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class KeyEncryptionError(SigningKeyMissing):
    """A private key in the database cannot be decrypted with the configured KEK, or the KEK
    setting is malformed. A ``SigningKeyMissing``: the token endpoint answers 503."""


def configured_keys() -> list[str]:
    return [
        item.strip()
        for item in str(settings.REGISTRY_KEYS_ENCRYPTION_KEYS).split(",")
        if item.strip()
    ]


def derived_key() -> bytes:
    """The Fernet key derived from ``SECRET_KEY`` (used when the setting is empty)."""
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
        settings.SECRET_KEY.encode()
    )
    return base64.urlsafe_b64encode(material)


def kek() -> MultiFernet:
    """The configured KEK: every key decrypts, the first encrypts; the derived key last
    (decrypt-only when the setting is set). Raises ``KeyEncryptionError`` for a malformed
    setting (which item, not its value)."""
    items = configured_keys()
    derived = Fernet(derived_key())
    if not items:
        return MultiFernet([derived])
    fernets = []
    for position, item in enumerate(items, start=1):
        try:
            fernets.append(Fernet(item.encode()))
        except (ValueError, binascii.Error) as exc:
            raise KeyEncryptionError(
                f"{SETTING}: key {position} of {len(items)} is not a Fernet key (32 bytes, "
                f"URL-safe base64). Generate one with `{GENERATE}`."
            ) from exc
    return MultiFernet([*fernets, derived])


def describe() -> str:
    """Which KEK is in use, for messages (never the key)."""
    items = configured_keys()
    if not items:
        return f"the key derived from DJANGO_SECRET_KEY ({SETTING} is unset)"
    return (
        f"{SETTING} ({len(items)} key{'s' if len(items) > 1 else ''}, then the key derived from "
        "DJANGO_SECRET_KEY)"
    )


def encrypt(private_pem: bytes) -> str:
    return kek().encrypt(private_pem).decode()


def decrypt(token: str, kid: str) -> bytes:
    """The private key PEM of signing key ``kid``. Raises ``KeyEncryptionError``."""
    try:
        return kek().decrypt(token.encode())
    except InvalidToken:
        raise KeyEncryptionError(
            f"The private key of registry signing key {kid} cannot be decrypted with "
            f"{describe()}: it was encrypted with another key-encryption key. Set {SETTING} "
            "(or DJANGO_SECRET_KEY) to the one the keys were written with, the same on every "
            "replica; when the KEK is rotated, keep the old key after the new one until "
            "`registry_keys reencrypt` has run (docs/registry-tokens.md)."
        ) from None


def reencrypt(token: str, kid: str) -> str:
    """``token`` encrypted again with the first KEK (``MultiFernet.rotate``)."""
    try:
        return kek().rotate(token.encode()).decode()
    except InvalidToken:
        decrypt(token, kid)  # raises the explanation
        raise
