"""Writes to the registry token key store: ``init``, ``create_ca``, ``rotate``, ``reencrypt``.

One CA ever: its certificate is recorded in the database the first time (created in
``REGISTRY_KEYS_DIR``, or imported from ``ca.key``/``ca.crt`` there), and a folder holding another
CA's key is refused from then on. Signing keys are issued where ``ca.key`` is and written to the
database, their private keys encrypted with the KEK (``registries.key_encryption``); every
replica picks them up from there (``registries.key_store``). Nothing here logs key material.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import IntegrityError, transaction
from django.utils import timezone

from registries import key_encryption
from registries.key_files import CA_KEY, KeyFolder
from registries.key_store import INIT_COMMAND, key_store
from registries.keys import (
    SigningKey,
    SigningKeyMissing,
    SigningKeys,
    fingerprint,
    issue_signing_key,
    private_pem,
    utc_now,
)
from registries.models import TokenSigningAuthority, TokenSigningKey
from registries.services.audit import platform_audit

logger = logging.getLogger("registries.services")

WHERE_CA_KEY_IS = (
    "the keys Job on Kubernetes (`keys-secret controlplane-registry-keys rotate`), the keys "
    "service in compose, or the `make run` host; deploy/README.md"
)


@dataclass
class InitResult:
    """What ``init_keys`` did; ``changed`` is False when there was nothing to do."""

    created_ca: bool = False
    recorded_ca: bool = False
    imported: list[str] = field(default_factory=list)
    issued: str | None = None
    wrote_ca_certificate: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.created_ca or self.recorded_ca or self.imported or self.issued)


def init_keys(folder: KeyFolder) -> InitResult:
    """Make the key store ready to sign; idempotent. See the module; a read-only folder is
    only read."""
    result = InitResult()
    with folder.exclusive():
        authority = TokenSigningAuthority.objects.first()
        local = folder.ca()
        if authority is None:
            if local is None:
                local = folder.create_ca()
                result.created_ca = True
            authority = _record_ca(local[1])
            result.recorded_ca = authority.fingerprint == fingerprint(local[1])
        ca_certificate = _check_same_ca(authority, local, folder)
        # Oldest first: keys issued in the same second are ordered by insertion.
        for key in reversed(folder.signing_files()):
            if _import(key, ca_certificate):
                result.imported.append(key.kid)
        if not TokenSigningKey.objects.filter(expires_at__gt=utc_now()).exists():
            if local is None:
                raise SigningKeyMissing(
                    f"No unexpired registry token signing key in the database, and no {CA_KEY} "
                    f"in {folder.directory} to issue one: run `{INIT_COMMAND}` where the CA's "
                    f"private key is ({WHERE_CA_KEY_IS})."
                )
            result.issued = _issue(*local).kid
        # The registries' rootcertbundle (`registry_config` renders its path); not on a
        # read-only folder.
        result.wrote_ca_certificate = folder.write_ca_certificate(authority.certificate.encode())
        if not result.changed:
            folder.make_private()
    if result.changed:
        platform_audit(
            "REGISTRY_SIGNING_KEYS_INITIALIZED",
            "REGISTRY_SIGNING_KEY",
            result.issued or "",
            {"created_ca": result.created_ca, "recorded_ca": result.recorded_ca,
             "imported": result.imported, "issued": result.issued},
        )  # fmt: skip
        key_store().forget()
        logger.info(
            "registry.keys.init",
            extra={
                "created_ca": result.created_ca,
                "imported": result.imported,
                "issued": result.issued,
                "ca_fingerprint": authority.fingerprint,
            },
        )
    return result


def create_ca(folder: KeyFolder) -> bool:
    """A new CA's ``ca.key`` and ``ca.crt`` in ``folder``, not recorded in the database, when
    neither the database nor the folder holds a CA; False (nothing done) otherwise. For a folder
    that does not outlive the process (the keys Job's): its caller stores the CA durably (the
    Secret) before ``init`` records it, so a CA is never recorded whose key exists nowhere."""
    with folder.exclusive():
        if TokenSigningAuthority.objects.exists() or folder.ca() is not None:
            return False
        folder.create_ca()
    logger.info("registry.keys.ca_created", extra={"directory": str(folder.directory)})
    return True


def rotate_keys(folder: KeyFolder) -> SigningKeys:
    """A new signing key from the CA, the newest from now on: every process signs with it
    within ``REGISTRY_KEYS_RECHECK_SECONDS``. Needs ``ca.key`` in ``folder``."""
    authority = TokenSigningAuthority.objects.first()
    if authority is None or not TokenSigningKey.objects.exists():
        raise SigningKeyMissing(f"No registry signing keys yet: run `{INIT_COMMAND}` first.")
    if not folder.has_ca_key():
        raise SigningKeyMissing(
            f"{folder.directory} holds no {CA_KEY}: a new signing key is issued where the CA's "
            f"private key is ({WHERE_CA_KEY_IS}); every replica picks it up from the database."
        )
    local = folder.ca()
    if local is None:  # has_ca_key: ca() raises for half a CA; removed since
        raise SigningKeyMissing(f"{folder.directory} holds no {CA_KEY} any more.")
    _check_same_ca(authority, local, folder)
    with transaction.atomic():
        key = _issue(*local)
        platform_audit(
            "REGISTRY_SIGNING_KEY_ROTATED",
            "REGISTRY_SIGNING_KEY",
            key.kid,
            {"kid": key.kid, "expires_at": key.expires_at.isoformat()},
        )
    key_store().forget()
    logger.info("registry.keys.rotated", extra={"kid": key.kid})
    return key_store().load()


def reencrypt_keys() -> int:
    """Every private key encrypted again with the first KEK; returns how many."""
    changed = 0
    with transaction.atomic():
        for row in TokenSigningKey.objects.select_for_update().order_by("id"):
            row.encrypted_private_key = key_encryption.reencrypt(row.encrypted_private_key, row.kid)
            row.save(update_fields=["encrypted_private_key"])
            changed += 1
        platform_audit(
            "REGISTRY_SIGNING_KEYS_REENCRYPTED", "REGISTRY_SIGNING_KEY", "", {"keys": changed}
        )
    logger.info("registry.keys.reencrypted", extra={"keys": changed})
    return changed


def _record_ca(certificate: x509.Certificate) -> TokenSigningAuthority:
    """The CA recorded once; a concurrent ``init`` that recorded another first wins (and ours
    is then refused as another CA)."""
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    try:
        with transaction.atomic():
            return TokenSigningAuthority.objects.create(
                certificate=pem, fingerprint=fingerprint(certificate)
            )
    except IntegrityError:
        return TokenSigningAuthority.objects.get()


def _check_same_ca(
    authority: TokenSigningAuthority,
    local: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
    folder: KeyFolder,
) -> x509.Certificate:
    """The recorded CA's certificate; raises if ``folder`` holds another CA's key."""
    recorded = x509.load_pem_x509_certificate(authority.certificate.encode())
    if local is not None and local[0].public_key() != recorded.public_key():
        raise SigningKeyMissing(
            f"{folder.path(CA_KEY)} is the key of another CA ({fingerprint(local[1])}) than the "
            f"one in the database ({authority.fingerprint}), which every registry trusts: there "
            "is one CA, ever. Use the recorded CA's ca.key (restore it from the backup or the "
            "keys Secret), or point REGISTRY_KEYS_DIR at a folder without CA files."
        )
    return recorded


def _import(key: SigningKey, ca_certificate: x509.Certificate) -> bool:
    """A signing key from a file of an earlier version, if it is our CA's, unexpired and not in
    the database yet."""
    if key.expires_at <= utc_now() or TokenSigningKey.objects.filter(kid=key.kid).exists():
        return False
    try:
        key.certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    _store(key, issued_at=key.issued_at)
    return True


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_certificate: x509.Certificate) -> SigningKey:
    key = issue_signing_key(ca_key, ca_certificate)
    _store(key, issued_at=timezone.now())
    return key


def _store(key: SigningKey, *, issued_at: dt.datetime) -> None:
    TokenSigningKey.objects.create(
        kid=key.kid,
        certificate=key.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        encrypted_private_key=key_encryption.encrypt(private_pem(key.private_key)),
        issued_at=issued_at,
        expires_at=key.expires_at,
    )
