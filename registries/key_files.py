"""The key folder, ``REGISTRY_KEYS_DIR``: the CA's files, and signing key files from before the
key store moved into the database (imported once by ``registry_keys init``).

- ``ca.crt``: the CA certificate, the registry's ``rootcertbundle`` (public, 0644). Registries
  read it from a file at start-up; ``registry_keys init`` writes it where the folder is writable
  and ``registry_keys ca-certificate`` prints or writes it anywhere.
- ``ca.key``: the CA's private key (0600), only where signing keys are issued (the keys Job,
  ``make run``). Never in the database.
- ``signing.pem``, ``signing-previous.pem``: the signing keys of a version that kept them in
  files; ``init`` imports them into the database, nothing writes them any more.

The folder may be read-only (a mounted Secret): nothing here writes unless it must.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

from controlplane.local_state import write_atomic
from registries.keys import SigningKey, SigningKeyMissing, issue_ca, private_pem

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SIGNING = "signing.pem"
SIGNING_PREVIOUS = "signing-previous.pem"
#: What a folder of an earlier version may hold, newest first.
SIGNING_FILES = (SIGNING, SIGNING_PREVIOUS)


class KeyFolder:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_certificate_path(self) -> Path:
        return self.path(CA_CERT)

    def has_ca_key(self) -> bool:
        return self.path(CA_KEY).exists()

    def ca_certificate(self) -> x509.Certificate | None:
        if not self.path(CA_CERT).exists():
            return None
        return x509.load_pem_x509_certificate(self.path(CA_CERT).read_bytes())

    def ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
        """The CA's private key and certificate, None if the folder holds neither. Raises
        ``SigningKeyMissing`` when it holds one only, or a key that is not the certificate's."""
        has_key, has_cert = self.path(CA_KEY).exists(), self.path(CA_CERT).exists()
        if not has_key and not has_cert:
            return None
        if has_key != has_cert:
            raise SigningKeyMissing(
                f"{self.directory} holds only one of {CA_KEY} and {CA_CERT}. Restore the "
                "other from a backup, or (if no registry trusts this CA yet) remove it and run "
                "`python manage.py registry_keys init` again."
            )
        key = serialization.load_pem_private_key(self.path(CA_KEY).read_bytes(), None)
        certificate = x509.load_pem_x509_certificate(self.path(CA_CERT).read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
            certificate.public_key()
        ):
            raise SigningKeyMissing(
                f"{self.path(CA_KEY)} is not the private key of {self.path(CA_CERT)}."
            )
        return key, certificate

    def create_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new CA, written as ``ca.key`` (0600) and ``ca.crt`` (0644) in a private folder."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.directory.chmod(0o700)  # mkdir leaves an existing folder's mode as it was
            key, certificate = issue_ca()
            write_atomic(self.path(CA_KEY), private_pem(key), mode=0o600)
            write_atomic(
                self.path(CA_CERT),
                certificate.public_bytes(serialization.Encoding.PEM),
                mode=0o644,
            )
        except OSError as exc:
            raise SigningKeyMissing(
                f"Cannot create the registry token CA in {self.directory} ({exc.strerror}): "
                "run `registry_keys init` first where the folder is writable (the keys Job, "
                "`make run`)."
            ) from exc
        return key, certificate

    def signing_files(self) -> list[SigningKey]:
        """The signing keys in files of an earlier version, newest first."""
        return [
            SigningKey.from_pem(self.path(name).read_bytes())
            for name in SIGNING_FILES
            if self.path(name).exists()
        ]

    def write_ca_certificate(self, pem: bytes) -> bool:
        """``ca.crt`` made ``pem`` if it is not; False (nothing written) on a read-only folder."""
        path = self.path(CA_CERT)
        if path.exists() and path.read_bytes() == pem:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(path, pem, mode=0o644)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return False
            raise
        return True

    def make_private(self) -> None:
        """The folder readable by its owner only; left as it is where it is read-only (a mounted
        Secret, whose mode the mount sets)."""
        if self.directory.is_dir() and self.directory.stat().st_mode & 0o077:
            try:
                self.directory.chmod(0o700)
            except OSError as exc:
                if exc.errno not in (errno.EROFS, errno.EPERM):
                    raise

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Serialise CA creation between processes on this folder; a no-op where it is
        read-only (nothing is created there)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(self.path(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock


def key_folder() -> KeyFolder:
    """``REGISTRY_KEYS_DIR``."""
    return KeyFolder(settings.REGISTRY_KEYS_DIR)
