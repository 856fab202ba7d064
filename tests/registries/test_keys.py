"""The registry token keys: one CA (its key a file, its certificate in the database) and signing
keys in the database, their private keys encrypted with the KEK; ``init`` and ``rotate``."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import re
import stat
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import CommandError, call_command

from registries import key_files
from registries.key_encryption import KeyEncryptionError
from registries.key_files import KeyFolder
from registries.key_store import KeyStore, key_store
from registries.keys import SigningKeyMissing, fingerprint, issue_signing_key, libtrust_kid
from registries.models import TokenSigningAuthority, TokenSigningKey
from registries.services.signing_keys import (
    create_ca,
    init_keys,
    reencrypt_keys,
    rotate_keys,
)

pytestmark = pytest.mark.django_db

KID = re.compile(r"[A-Z2-7]{4}(:[A-Z2-7]{4}){11}")


@pytest.fixture
def folder(tmp_path: Path, settings) -> KeyFolder:
    """An empty key store: no CA nor key in the database (this test's transaction), a new
    REGISTRY_KEYS_DIR; ``init`` not run yet."""
    TokenSigningKey.objects.all().delete()
    TokenSigningAuthority.objects.all().delete()
    key_store().forget()
    settings.REGISTRY_KEYS_DIR = str(tmp_path / "keys")
    return KeyFolder(tmp_path / "keys")


@pytest.fixture
def ready(folder: KeyFolder) -> KeyFolder:
    assert init_keys(folder).changed is True
    return folder


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def files(folder: KeyFolder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.directory.iterdir())}


def rows() -> list[tuple[str, str]]:
    return list(TokenSigningKey.objects.values_list("kid", "encrypted_private_key"))


def run(*args: str) -> str:
    out = StringIO()
    call_command("registry_keys", *args, stdout=out)
    return out.getvalue()


# --- init -----------------------------------------------------------------------------------


def test_init_creates_the_ca_files_and_a_signing_key_in_the_database(folder: KeyFolder) -> None:
    result = init_keys(folder)

    assert result.created_ca
    assert result.issued is not None
    assert mode(folder.directory) == 0o700
    assert sorted(files(folder)) == [".lock", "ca.crt", "ca.key"]  # no signing file
    assert mode(folder.path("ca.crt")) == 0o644
    assert mode(folder.path("ca.key")) == 0o600
    authority = TokenSigningAuthority.objects.get()
    assert authority.certificate.encode() == folder.path("ca.crt").read_bytes()
    assert b"PRIVATE" not in authority.certificate.encode()  # the CA's key is not in the DB
    [(kid, encrypted)] = rows()
    assert key_store().load().current.kid == kid == result.issued
    assert KID.fullmatch(kid)


def test_the_private_key_is_encrypted_at_rest(ready: KeyFolder) -> None:
    [(kid, encrypted)] = rows()
    current = key_store().load().current
    pem = current.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    assert "PRIVATE KEY" not in encrypted
    assert pem.decode() not in encrypted
    assert base64.urlsafe_b64decode(encrypted)[0] == 0x80  # a Fernet token
    assert Fernet(ready_kek()).decrypt(encrypted.encode()) == pem


def ready_kek() -> bytes:
    from registries.key_encryption import derived_key

    return derived_key()


def test_init_a_second_time_changes_nothing(ready: KeyFolder) -> None:
    before_files, before_rows = files(ready), rows()

    result = init_keys(ready)

    assert result.changed is False
    assert files(ready) == before_files
    assert rows() == before_rows
    assert TokenSigningAuthority.objects.count() == 1


def test_the_signing_certificate_is_issued_by_the_ca_ec_p256_without_extended_key_usage(
    ready: KeyFolder,
) -> None:
    ca = x509.load_pem_x509_certificate(TokenSigningAuthority.objects.get().certificate.encode())
    current = key_store().load().current

    current.certificate.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(current.private_key.curve, ec.SECP256R1)
    assert current.certificate.public_key() == current.public_key
    with pytest.raises(x509.ExtensionNotFound):
        current.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_the_kid_is_libtrusts_and_x5c_the_certificate_in_standard_base64_der(
    ready: KeyFolder,
) -> None:
    current = key_store().load().current
    der = current.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()

    assert libtrust_kid(current.public_key) == current.kid
    assert current.kid == ":".join(encoded[i : i + 4] for i in range(0, 48, 4))
    [x5c] = current.x5c
    assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", x5c)
    assert x509.load_der_x509_certificate(base64.b64decode(x5c)) == current.certificate


def write_old_folder(folder: KeyFolder) -> tuple[str, str]:
    """A folder as an earlier version left it: the CA, signing.pem and signing-previous.pem."""
    ca_key, ca_certificate = folder.create_ca()
    previous = issue_signing_key(ca_key, ca_certificate)
    current = issue_signing_key(ca_key, ca_certificate)
    folder.path("signing-previous.pem").write_bytes(previous.pem())
    folder.path("signing.pem").write_bytes(current.pem())
    return current.kid, previous.kid


def test_init_imports_the_ca_and_signing_keys_of_an_earlier_version(folder: KeyFolder) -> None:
    current, previous = write_old_folder(folder)
    ca_before = folder.path("ca.crt").read_bytes()

    result = init_keys(folder)

    assert not result.created_ca
    assert result.recorded_ca
    assert result.imported == [previous, current]  # oldest first
    assert result.issued is None  # the imported key signs: tokens out there stay valid
    assert TokenSigningAuthority.objects.get().certificate.encode() == ca_before
    keys = key_store().load()
    assert keys.current.kid == current
    assert [key.kid for key in keys.older] == [previous]
    assert init_keys(folder).changed is False


def test_init_refuses_the_key_of_a_second_ca(ready: KeyFolder, tmp_path: Path) -> None:
    other = KeyFolder(tmp_path / "other")
    other.create_ca()
    before = rows()

    with pytest.raises(SigningKeyMissing, match="is the key of another CA .* one CA, ever"):
        init_keys(other)
    with pytest.raises(SigningKeyMissing, match="is the key of another CA"):
        rotate_keys(other)
    assert rows() == before
    assert TokenSigningAuthority.objects.count() == 1


def test_init_refuses_a_folder_with_half_a_ca(folder: KeyFolder) -> None:
    folder.create_ca()
    folder.path("ca.key").unlink()

    with pytest.raises(SigningKeyMissing, match="holds only one of ca.key and ca.crt"):
        init_keys(folder)
    assert not TokenSigningAuthority.objects.exists()


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write to a folder fails as on a read-only mount (root ignores modes)."""

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    original_open = os.open

    def open_(path: str, flags: int, *args: object) -> int:
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            refused()
        return original_open(path, flags, *args)

    for name in ("mkdir", "chmod", "write_bytes", "unlink", "rename", "replace"):
        monkeypatch.setattr(Path, name, refused)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(key_files, "write_atomic", refused)


def test_init_on_a_read_only_folder_imports_and_writes_nothing_there(
    folder: KeyFolder, monkeypatch
) -> None:
    current, _ = write_old_folder(folder)  # a mounted Secret of an earlier version
    folder.directory.chmod(0o755)
    before = files(folder)
    _read_only(monkeypatch)

    assert init_keys(folder).imported == [_, current]
    assert init_keys(folder).changed is False
    monkeypatch.undo()
    assert files(folder) == before


def test_init_and_rotate_on_a_folder_without_ca_key_say_where_to_run_them(
    ready: KeyFolder, tmp_path: Path, monkeypatch
) -> None:
    signer = KeyFolder(tmp_path / "signer")  # a web pod: no key file at all
    _read_only(monkeypatch)

    assert init_keys(signer).changed is False
    with pytest.raises(SigningKeyMissing, match="holds no ca.key: a new signing key is issued"):
        rotate_keys(signer)


def test_init_without_a_valid_signing_key_and_without_ca_key_is_refused(
    ready: KeyFolder, tmp_path: Path
) -> None:
    TokenSigningKey.objects.all().delete()

    with pytest.raises(SigningKeyMissing, match="no ca.key in .* to issue one"):
        init_keys(KeyFolder(tmp_path / "signer"))
    assert init_keys(ready).issued is not None  # where ca.key is


def test_create_ca_makes_a_ca_without_recording_it_only_where_none_is_recorded(
    ready: KeyFolder, tmp_path: Path
) -> None:
    """The keys Job stores the CA in its Secret between ``create-ca`` and ``init``."""
    assert run("create-ca").startswith("A CA exists already")
    assert create_ca(KeyFolder(tmp_path / "elsewhere")) is False  # one is recorded
    assert not (tmp_path / "elsewhere" / "ca.key").exists()
    TokenSigningKey.objects.all().delete()
    TokenSigningAuthority.objects.all().delete()
    folder = KeyFolder(tmp_path / "new")

    assert create_ca(folder) is True
    assert not TokenSigningAuthority.objects.exists()
    assert create_ca(folder) is False  # the folder holds one
    created = folder.ca()
    assert created is not None
    init_keys(folder)
    assert TokenSigningAuthority.objects.get().fingerprint == fingerprint(created[1])


# --- the KEK --------------------------------------------------------------------------------


def test_a_wrong_kek_is_a_clear_error_without_key_material(ready: KeyFolder, settings) -> None:
    settings.REGISTRY_KEYS_ENCRYPTION_KEYS = Fernet.generate_key().decode()
    reencrypt_keys()  # away from the derived key, which always decrypts
    settings.REGISTRY_KEYS_ENCRYPTION_KEYS = Fernet.generate_key().decode()
    [(kid, encrypted)] = rows()
    key_store().forget()

    with pytest.raises(KeyEncryptionError) as raised:
        key_store().load()

    message = str(raised.value)
    assert f"signing key {kid} cannot be decrypted with REGISTRY_KEYS_ENCRYPTION_KEYS" in message
    assert encrypted not in message
    assert settings.REGISTRY_KEYS_ENCRYPTION_KEYS not in message


def test_another_secret_key_is_another_derived_kek(ready: KeyFolder, settings) -> None:
    settings.SECRET_KEY = "another-secret-key-" * 3
    key_store().forget()

    with pytest.raises(KeyEncryptionError, match="the key derived from DJANGO_SECRET_KEY"):
        key_store().load()


def test_the_kek_rotates_old_keys_decrypt_until_reencrypt(ready: KeyFolder, settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.REGISTRY_KEYS_ENCRYPTION_KEYS = old
    TokenSigningKey.objects.all().delete()
    init_keys(ready)
    rotate_keys(ready)  # both encrypted with `old`
    settings.REGISTRY_KEYS_ENCRYPTION_KEYS = f"{new},{old}"
    key_store().forget()
    kid = key_store().load().current.kid  # MultiFernet: the old key still decrypts

    assert run("reencrypt").startswith("Encrypted 2 private key(s) again")
    settings.REGISTRY_KEYS_ENCRYPTION_KEYS = new
    key_store().forget()
    assert key_store().load().current.kid == kid
    assert reencrypt_keys() == 2  # with `new` alone: every key was encrypted with it


def test_moving_from_the_derived_kek_to_an_explicit_one_keeps_every_key(
    ready: KeyFolder, settings
) -> None:
    """The derived key cannot be written as OLD in the setting: it stays the last, decrypt-only
    KEK, so setting an explicit one neither stops the token service nor needs it."""
    rotate_keys(ready)  # two keys, both encrypted with the key derived from SECRET_KEY
    kid = key_store().load().current.kid
    explicit = Fernet.generate_key().decode()
    settings.REGISTRY_KEYS_ENCRYPTION_KEYS = explicit
    key_store().forget()

    assert key_store().load().current.kid == kid  # the derived key still decrypts
    assert reencrypt_keys() == 2
    for _kid, encrypted in rows():  # now encrypted with the explicit key, not the derived one
        Fernet(explicit.encode()).decrypt(encrypted.encode())
        with pytest.raises(InvalidToken):
            Fernet(ready_kek()).decrypt(encrypted.encode())
    settings.SECRET_KEY = "another-secret-key-" * 3  # DJANGO_SECRET_KEY may rotate freely now
    key_store().forget()
    assert key_store().load().current.kid == kid


# --- rotation and the acceptance windows ----------------------------------------------------


def test_rotate_issues_a_newer_key_and_each_older_one_is_accepted_for_the_longest_lifetime(
    ready: KeyFolder, settings
) -> None:
    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = 10
    settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS = 20
    settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS = 30
    first = key_store().load().current.kid
    second = rotate_keys(ready).current.kid
    keys = rotate_keys(ready)
    by_kid = {row.kid: row for row in TokenSigningKey.objects.all()}

    assert len({first, second, keys.current.kid}) == 3
    assert [key.kid for key in keys.older] == [second, first]  # N keys, newest first
    for older, replaced_by in ((second, keys.current.kid), (first, second)):
        [key] = [key for key in keys.older if key.kid == older]
        assert key.accepted_until == by_kid[replaced_by].issued_at + dt_seconds(30)
        assert keys.public_key(older, key.accepted_until - dt_seconds(1)) == key.public_key
        assert keys.public_key(older, key.accepted_until) is None
    assert [key.kid for key in keys.accepted(by_kid[keys.current.kid].issued_at)] == [
        keys.current.kid,
        second,
        first,
    ]


def dt_seconds(seconds: int):  # noqa: ANN201 - a timedelta
    import datetime as dt

    return dt.timedelta(seconds=seconds)


def test_rotate_before_init_says_to_run_init(folder: KeyFolder) -> None:
    with pytest.raises(CommandError, match="run `python manage.py registry_keys init` first"):
        run("rotate")


def test_registry_keys_status_lists_kids_and_roles_no_secret(ready: KeyFolder) -> None:
    first = key_store().load().current.kid
    out = run("rotate")
    current = key_store().load().current.kid

    assert f"Issued signing key {current}." in out
    assert f"current signing key: kid {current}, issued " in out
    assert f"accepted signing key: kid {first}, issued " in out
    assert "PRIVATE" not in out
    for _, encrypted in rows():
        assert encrypted not in out


def test_registry_keys_ca_certificate_prints_and_writes_the_recorded_certificate(
    ready: KeyFolder, tmp_path: Path
) -> None:
    pem = TokenSigningAuthority.objects.get().certificate

    assert run("ca-certificate") == pem
    run("ca-certificate", "--output", str(tmp_path / "bundle" / "ca.crt"))
    assert (tmp_path / "bundle" / "ca.crt").read_text() == pem
    assert mode(tmp_path / "bundle" / "ca.crt") == 0o644


def test_registry_keys_before_migrate_says_to_migrate(monkeypatch) -> None:
    from django.db import connection

    monkeypatch.setattr(connection.introspection, "table_names", lambda *args, **kwargs: [])

    with pytest.raises(CommandError, match="run `python manage.py migrate` first"):
        run("init")


def test_registry_keys_init_a_second_time_says_nothing_changed(ready: KeyFolder) -> None:
    assert "Registry keys already exist; nothing changed." in run("init")


def test_a_fresh_store_of_another_process_reads_the_same_keys(ready: KeyFolder) -> None:
    other = KeyStore()
    assert other.load().current.kid == key_store().load().current.kid
