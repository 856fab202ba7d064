"""The keys that sign registry tokens: a CA the registry trusts, and a signing certificate from it.

Distribution trusts the certificates in its ``rootcertbundle``, which it reads only at start-up.
We give it one long-lived CA certificate and sign tokens with a shorter-lived key whose
certificate that CA issued, sent in each token's ``x5c`` header. A new signing key therefore needs
no registry restart: ``registry_keys rotate`` issues one from the same CA.

Files under ``REGISTRY_KEYS_DIR``:

- ``ca.crt``: the CA certificate, the registry's ``rootcertbundle`` (public, 0644).
- ``ca.key``: the CA's private key (0600). Used only to issue signing certificates.
- ``signing.pem``: the current signing key and its certificate, in one file (0600), so that a
  reader never sees a key with another key's certificate.
- ``signing-previous.pem``: the one before the last rotation (0600). Tokens it signed stay valid
  until they expire; refresh tokens it signed are still accepted for the longest token lifetime
  after the rotation (``previous_accepted_until``).

Every write goes to a temporary file in the same folder and is renamed into place.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings

from controlplane.local_state import write_atomic

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SIGNING = "signing.pem"
SIGNING_PREVIOUS = "signing-previous.pem"

INIT_COMMAND = "python manage.py registry_keys init"
#: How far certificates start in the past, so that a registry whose clock is a little behind
#: ours never sees one from the future (the tokens' 60 s leeway does not cover certificates).
BACKDATE = dt.timedelta(minutes=5)
#: How long a process signs with the keys it loaded before it looks at ``signing.pem`` again: a
#: rotation by another process (``registry_keys rotate``, the keys job) is used here within this
#: long; one by this process (any store on the same folder) at once.
RECHECK_SECONDS = 1.0


class SigningKeyMissing(Exception):
    """No signing key in ``REGISTRY_KEYS_DIR``; the message says which command creates one."""


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
        return _private_pem(self.private_key) + self.certificate.public_bytes(
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
class SigningKeys:
    """What the token service signs with (``current``) and what it still accepts."""

    current: SigningKey
    previous: SigningKey | None

    def previous_accepted_until(self) -> dt.datetime | None:
        if self.previous is None:
            return None
        return self.current.issued_at + dt.timedelta(seconds=longest_token_lifetime())

    def accepted(self, now: dt.datetime) -> list[SigningKey]:
        """Keys whose signatures we accept on tokens that come back to us (refresh tokens)."""
        until = self.previous_accepted_until()
        if self.previous is not None and until is not None and now < until:
            return [self.current, self.previous]
        return [self.current]


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


def _issue_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
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


def _issue_signing_key(
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


class KeyStore:
    """The key files in one folder. Reading is cached until ``signing.pem`` changes, so a running
    service picks up a rotation by itself: a rotation through any store of this process at once,
    one by another process once ``RECHECK_SECONDS`` have passed (``signing.pem`` is looked at no
    more often than that, not on every token)."""

    #: The clock the re-check bound is measured on (the tests move it).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._folder = str(self.directory)
        self._signing_path = str(self.directory / SIGNING)
        self._lock = threading.Lock()
        self._cached: _Loaded | None = None

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_certificate_path(self) -> Path:
        return self.path(CA_CERT)

    def exists(self) -> bool:
        """Whether the folder holds what signing needs: the CA's certificate (the registries'
        trust) and a signing key. The CA's private key is needed only where signing keys are
        issued (``init`` of a new CA, ``rotate``), so a folder without it (a Secret mounted
        where tokens are only signed) is complete."""
        return self.path(CA_CERT).exists() and self.path(SIGNING).exists()

    def _ready(self) -> bool:
        """Whether ``init`` has nothing to do (the CA's certificate, an unexpired signing key)."""
        signing = self.path(SIGNING)
        return self.exists() and SigningKey.from_pem(signing.read_bytes()).expires_at > utc_now()

    def init(self) -> bool:
        """Create what is missing: the CA and a signing key, or only a signing key from an
        existing CA (after a crash, or if ``signing.pem`` was removed or has expired). Returns
        False when both were there and valid; then nothing is written, so ``init`` on a
        read-only folder that holds the keys (a mounted Secret) says so rather than failing.
        An existing CA is never replaced: every registry that trusts it would reject our
        tokens."""
        if self._ready():
            _make_private(self.directory)
            return False
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.chmod(0o700)  # mkdir leaves an existing folder's mode as it was
        with self._exclusive():
            if self.path(CA_KEY).exists() != self.path(CA_CERT).exists():
                raise SigningKeyMissing(
                    f"{self.directory} holds only one of {CA_KEY} and {CA_CERT}. Restore the "
                    "other from a backup, or (if no registry trusts this CA yet) remove it and "
                    f"run `{INIT_COMMAND}` again."
                )
            if not self.path(CA_KEY).exists():
                ca_key, ca_certificate = _issue_ca()
                write_atomic(self.path(CA_KEY), _private_pem(ca_key), mode=0o600)
                write_atomic(
                    self.path(CA_CERT),
                    ca_certificate.public_bytes(serialization.Encoding.PEM),
                    mode=0o644,
                )
            elif self.path(SIGNING).exists():
                current = SigningKey.from_pem(self.path(SIGNING).read_bytes())
                if current.expires_at > utc_now():
                    return False
                self._replace_signing_key()  # expired: a rotation
                return True
            ca_key, ca_certificate = self._ca()
            write_atomic(
                self.path(SIGNING), _issue_signing_key(ca_key, ca_certificate).pem(), mode=0o600
            )
        _changed(self.directory)
        return True

    def rotate(self) -> SigningKeys:
        """Issue a new signing key from the same CA; the current one becomes the previous one."""
        if not self.exists():
            raise SigningKeyMissing(
                f"No registry signing keys in {self.directory}: run `{INIT_COMMAND}` first."
            )
        if not self.path(CA_KEY).exists():
            raise SigningKeyMissing(
                f"{self.directory} holds no {CA_KEY}: a new signing key is issued where the CA's "
                "private key is (the keys Job's folder, `keys-secret SECRET rotate`; "
                "deploy/README.md), and reaches this folder from there."
            )
        with self._exclusive():
            self._replace_signing_key()
        return self.load()

    def _replace_signing_key(self) -> None:
        """A new signing key from the CA; the current one becomes the previous one."""
        ca_key, ca_certificate = self._ca()
        new = _issue_signing_key(ca_key, ca_certificate)
        with self._lock:
            write_atomic(self.path(SIGNING_PREVIOUS), self.path(SIGNING).read_bytes(), mode=0o600)
            write_atomic(self.path(SIGNING), new.pem(), mode=0o600)
            self._cached = None
        _changed(self.directory)

    def _ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        ca_key = serialization.load_pem_private_key(self.path(CA_KEY).read_bytes(), None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.path(CA_KEY)} is not an EC private key")
        return ca_key, x509.load_pem_x509_certificate(self.path(CA_CERT).read_bytes())

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise key changes between processes (two ``init`` at once, say)."""
        descriptor = os.open(self.path(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def load(self) -> SigningKeys:
        """The current and previous signing keys. Raises ``SigningKeyMissing``.

        Warm, no system call: the keys last loaded, until ``RECHECK_SECONDS`` have passed or a
        store of this process changed the folder's keys; then ``signing.pem`` is looked at again
        (a ``stat``) and read only if it changed."""
        cached = self._cached
        now = self.clock()
        if (
            cached is not None
            and now < cached.recheck_at
            and cached.generation == _generations.get(self._folder, 0)
        ):
            return cached.keys
        generation = _generations.get(self._folder, 0)
        try:
            stat = os.stat(self._signing_path)
        except FileNotFoundError:
            raise SigningKeyMissing(
                f"The registry token service has no signing key in {self.directory}. "
                f"Run `{INIT_COMMAND}` (it creates the CA the registry trusts and a signing key)."
            ) from None
        stamp = (stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            if self._cached is not None and self._cached.stamp == stamp:
                keys = self._cached.keys
            else:
                current = SigningKey.from_pem(self.path(SIGNING).read_bytes())
                previous_path = self.path(SIGNING_PREVIOUS)
                previous = (
                    SigningKey.from_pem(previous_path.read_bytes())
                    if previous_path.exists()
                    else None
                )
                keys = SigningKeys(current=current, previous=previous)
            self._cached = _Loaded(keys, stamp, generation, now + RECHECK_SECONDS)
            return keys


@dataclass(frozen=True)
class _Loaded:
    """What a store loaded: the keys, ``signing.pem``'s (mtime, inode) they were read at, the
    folder's change count in this process then, and when to look at the file again."""

    keys: SigningKeys
    stamp: tuple[int, int]
    generation: int
    recheck_at: float


#: Key changes made by this process, per folder: a store sees another store's change at once.
_generations: dict[str, int] = {}


def _changed(directory: Path) -> None:
    with _stores_lock:
        _generations[str(directory)] = _generations.get(str(directory), 0) + 1


def _make_private(directory: Path) -> None:
    """The folder readable by its owner only, as ``init`` creates it; left as it is where the
    folder is read-only (a mounted Secret, whose mode the mount sets)."""
    if directory.stat().st_mode & 0o077:
        try:
            directory.chmod(0o700)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


_stores: dict[str, KeyStore] = {}
_stores_lock = threading.Lock()


def key_store() -> KeyStore:
    """The key store of ``REGISTRY_KEYS_DIR``, one per folder per process."""
    directory = str(settings.REGISTRY_KEYS_DIR)
    store = _stores.get(directory)
    if store is not None:
        return store
    with _stores_lock:
        if directory not in _stores:
            _stores[directory] = KeyStore(directory)
        return _stores[directory]
