"""The keys that sign registry tokens: a CA the registry trusts, and signing certificates from it.

Distribution trusts the certificates in its ``rootcertbundle``, which it reads only at start-up.
We give it one long-lived CA certificate and sign tokens with shorter-lived keys whose
certificates that CA issued, sent in each token's ``x5c`` header. A new signing key therefore
needs no registry restart: ``registry_keys rotate`` issues one from the same CA.

This module holds the keys themselves (certificates, key ids, the acceptance windows). Where they
live: the signing keys in the database, their private keys encrypted (``registries.key_store``,
``registries.key_encryption``); the CA's private key in a file only where signing keys are issued
(``registries.key_files``); see docs/registry-tokens.md.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SIGNING = "signing.pem"
SIGNING_PREVIOUS = "signing-previous.pem"

INIT_COMMAND = "python manage.py registry_keys init"
#: How far certificates start in the past, so that a registry whose clock is a little behind
#: ours never sees one from the future (the tokens' 60 s leeway does not cover certificates).
BACKDATE = dt.timedelta(minutes=5)


class SigningKeyMissing(Exception):
    """No signing key to sign with (or none we can read); the message says what to run."""


def libtrust_kid(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key id Distribution computes for a public key (libtrust's format): the SHA-256 of the
    DER SubjectPublicKeyInfo, truncated to 240 bits, base32, in 12 groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))


@dataclass(frozen=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    # Computed once per key: every token the endpoint signs carries both in its header.
    @cached_property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    @cached_property
    def kid(self) -> str:
        return libtrust_kid(self.public_key)

    @cached_property
    def x5c(self) -> list[str]:
        """The ``x5c`` header: the signing certificate as standard (not URL-safe) base64 DER."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return [base64.b64encode(der).decode()]

    @property
    def issued_at(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc + BACKDATE

    @property
    def expires_at(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def pem(self) -> bytes:
        return private_pem(self.private_key) + self.certificate.public_bytes(
            serialization.Encoding.PEM
        )

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the signing key is not an EC key")
        certificate = x509.load_pem_x509_certificate(data)
        if certificate.public_key() != key.public_key():
            raise ValueError("the signing certificate does not belong to the signing key")
        return cls(private_key=key, certificate=certificate)


@dataclass(frozen=True)
class VerifyingKey:
    """An older signing key: its public key, and until when refresh tokens it signed are still
    accepted (the longest token lifetime after the next key was issued, at most its expiry)."""

    kid: str
    public_key: ec.EllipticCurvePublicKey
    accepted_until: dt.datetime


@dataclass(frozen=True)
class SigningKeys:
    """What the token service signs with (``current``, the newest key) and the older keys it may
    still accept on tokens that come back (refresh tokens), newest first."""

    current: SigningKey
    older: tuple[VerifyingKey, ...] = ()

    @property
    def previous(self) -> VerifyingKey | None:
        return self.older[0] if self.older else None

    def previous_accepted_until(self) -> dt.datetime | None:
        return None if self.previous is None else self.previous.accepted_until

    def accepted(self, now: dt.datetime) -> list[VerifyingKey]:
        """Keys whose signatures we accept at ``now``: the current one, and each older one until
        its ``accepted_until``."""
        current = VerifyingKey(self.current.kid, self.current.public_key, self.current.expires_at)
        return [current, *(key for key in self.older if now < key.accepted_until)]

    def public_key(self, kid: object, now: dt.datetime) -> ec.EllipticCurvePublicKey | None:
        """The public key of ``kid`` if we accept its signatures at ``now``."""
        if kid == self.current.kid:
            return self.current.public_key
        for key in self.older:
            if key.kid == kid:
                return key.public_key if now < key.accepted_until else None
        return None


def acceptance_windows(
    issued: list[tuple[str, ec.EllipticCurvePublicKey, dt.datetime, dt.datetime]],
) -> tuple[VerifyingKey, ...]:
    """The older keys of ``issued`` (kid, public key, issued at, expires at; newest first, the
    current one first of all) with their windows: a key is accepted for the longest token
    lifetime after the key that replaced it was issued, and never after it expires. Keys whose
    window has closed are left out."""
    lifetime = dt.timedelta(seconds=longest_token_lifetime())
    now = dt.datetime.now(dt.UTC)
    older = []
    for (_, _, replaced_at, _), (kid, public_key, _, expires_at) in zip(
        issued, issued[1:], strict=False
    ):
        until = min(replaced_at + lifetime, expires_at)
        if until > now:
            older.append(VerifyingKey(kid, public_key, until))
    return tuple(older)


def longest_token_lifetime() -> int:
    return max(
        settings.REGISTRY_TOKEN_PULL_TTL_SECONDS,
        settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS,
        settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, settings.REGISTRY_TOKEN_ISSUER),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def utc_now() -> dt.datetime:
    """Now, in UTC, to the second (what certificates and JWTs can say)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: bool,
) -> x509.Certificate:
    """A CA certificate (``ca``: it signs certificates) or a signing one (it signs tokens).

    Neither has an extended key usage: Go's verifier accepts a certificate without one for any
    purpose, and would reject a token signing certificate restricted to another.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if not ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def issue_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    name = _name("registry token CA")
    certificate = _certificate(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        issuer_key=key,
        not_before=now - BACKDATE,
        not_after=now + dt.timedelta(days=settings.REGISTRY_CA_CERT_DAYS),
        ca=True,
    )
    return key, certificate


def issue_signing_key(
    ca_key: ec.EllipticCurvePrivateKey, ca_certificate: x509.Certificate
) -> SigningKey:
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    certificate = _certificate(
        subject=_name(f"registry token signing key {now:%Y-%m-%dT%H:%M:%SZ}"),
        public_key=key.public_key(),
        issuer=ca_certificate.subject,
        issuer_key=ca_key,
        not_before=now - BACKDATE,
        not_after=min(
            now + dt.timedelta(days=settings.REGISTRY_SIGNING_CERT_DAYS),
            ca_certificate.not_valid_after_utc,
        ),
        ca=False,
    )
    return SigningKey(private_key=key, certificate=certificate)


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(certificate: x509.Certificate) -> str:
    """A certificate's SHA-256 fingerprint, as ``openssl x509 -fingerprint -sha256`` shows it."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
