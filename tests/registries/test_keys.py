"""The key store that signs registry tokens: its files, certificates, key ids and rotation."""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import os
import re
import stat
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import CommandError, call_command

from registries import keys as keys_module
from registries.keys import KeyStore, SigningKey, SigningKeyMissing, libtrust_kid

KID = re.compile(r"[A-Z2-7]{4}(:[A-Z2-7]{4}){11}")
INIT_HINT = "Run `python manage.py registry_keys init`"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    """A fresh, initialised store of its own (not the suite's shared one)."""
    store = KeyStore(tmp_path / "keys")
    assert store.init() is True
    return store


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def file_bytes(store: KeyStore) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(store.directory.iterdir())}


def ca_certificate(store: KeyStore) -> x509.Certificate:
    return x509.load_pem_x509_certificate(store.ca_certificate_path.read_bytes())


def basic_constraints(certificate: x509.Certificate) -> x509.BasicConstraints:
    return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value


def describe(label: str, key: SigningKey) -> str:
    """The line ``registry_keys`` prints for a key."""
    certificate = key.certificate
    return (
        f"{label}: kid {key.kid}, valid {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} "
        f"to {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


# --- init -----------------------------------------------------------------------------------


def test_init_creates_the_folder_with_a_public_ca_certificate_and_private_keys(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys")

    created = store.init()

    assert created is True
    assert store.directory.is_dir()
    assert mode(store.directory) == 0o700
    assert sorted(path.name for path in store.directory.iterdir()) == [
        ".lock",  # serialises key changes between processes
        "ca.crt",
        "ca.key",
        "signing.pem",
    ]
    assert mode(store.path("ca.crt")) == 0o644
    assert mode(store.path("ca.key")) == 0o600
    assert mode(store.path("signing.pem")) == 0o600
    assert store.exists() is True


def test_init_a_second_time_returns_false_and_changes_no_file(store: KeyStore) -> None:
    before = file_bytes(store)

    created = store.init()

    assert created is False
    assert file_bytes(store) == before


def test_the_signing_certificate_is_issued_by_the_ca(store: KeyStore) -> None:
    ca = ca_certificate(store)
    current = store.load().current

    current.certificate.verify_directly_issued_by(ca)  # raises if it was not

    assert current.certificate.issuer == ca.subject
    assert basic_constraints(ca).ca is True
    assert basic_constraints(current.certificate).ca is False


def test_the_signing_certificate_has_no_extended_key_usage_that_would_restrict_it(
    store: KeyStore,
) -> None:
    certificate = store.load().current.certificate

    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_the_signing_key_is_ec_p256_and_belongs_to_its_certificate(store: KeyStore) -> None:
    current = store.load().current

    assert isinstance(current.private_key, ec.EllipticCurvePrivateKey)
    assert isinstance(current.private_key.curve, ec.SECP256R1)
    assert current.certificate.public_key() == current.public_key


# --- kid and x5c ----------------------------------------------------------------------------


def test_the_kid_is_libtrusts_twelve_groups_of_four_base32_characters(store: KeyStore) -> None:
    public_key = store.load().current.public_key
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    expected = ":".join(encoded[i : i + 4] for i in range(0, 48, 4))

    kid = libtrust_kid(public_key)

    assert KID.fullmatch(kid)
    assert "=" not in encoded  # 30 bytes are 48 base32 characters, no padding
    assert kid == expected
    assert store.load().current.kid == expected


def test_x5c_is_the_signing_certificate_alone_in_standard_base64_der(store: KeyStore) -> None:
    current = store.load().current

    x5c = current.x5c

    assert isinstance(x5c, list)
    assert len(x5c) == 1
    assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", x5c[0])
    assert x509.load_der_x509_certificate(base64.b64decode(x5c[0])) == current.certificate


# --- rotate ---------------------------------------------------------------------------------


def test_rotate_issues_a_new_key_from_the_same_ca_and_keeps_the_old_one_as_previous(
    store: KeyStore,
) -> None:
    ca_before = {name: store.path(name).read_bytes() for name in ("ca.crt", "ca.key")}
    old = store.load().current

    keys = store.rotate()

    assert {name: store.path(name).read_bytes() for name in ("ca.crt", "ca.key")} == ca_before
    assert keys.current.kid != old.kid
    assert keys.previous is not None
    assert keys.previous.kid == old.kid
    assert keys.previous.certificate == old.certificate
    keys.current.certificate.verify_directly_issued_by(ca_certificate(store))
    assert store.load().current.kid == keys.current.kid
    assert mode(store.path("signing-previous.pem")) == 0o600
    assert mode(store.path("signing.pem")) == 0o600


def test_rotating_twice_keeps_only_the_last_previous_key(store: KeyStore) -> None:
    first = store.load().current.kid
    second = store.rotate().current.kid

    keys = store.rotate()

    assert keys.previous is not None
    assert keys.previous.kid == second
    assert first not in {keys.current.kid, keys.previous.kid}
    assert sorted(path.name for path in store.directory.iterdir()) == [
        ".lock",
        "ca.crt",
        "ca.key",
        "signing-previous.pem",
        "signing.pem",
    ]


def test_a_rotation_by_another_store_on_the_same_folder_is_picked_up(store: KeyStore) -> None:
    old = store.load().current.kid  # cached by this instance
    other = KeyStore(store.directory)

    rotated = other.rotate()

    keys = store.load()
    assert keys.current.kid == rotated.current.kid != old
    assert keys.previous is not None
    assert keys.previous.kid == old


def test_the_previous_key_is_accepted_for_the_longest_token_lifetime_after_rotation(
    store: KeyStore, settings
) -> None:
    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = 10
    settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS = 30
    settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS = 20
    keys = store.rotate()
    assert keys.previous is not None
    rotated_at = keys.current.issued_at

    assert keys.previous_accepted_until() == rotated_at + dt.timedelta(seconds=30)
    assert [key.kid for key in keys.accepted(rotated_at)] == [
        keys.current.kid,
        keys.previous.kid,
    ]
    assert [key.kid for key in keys.accepted(rotated_at + dt.timedelta(seconds=29))] == [
        keys.current.kid,
        keys.previous.kid,
    ]
    assert [key.kid for key in keys.accepted(rotated_at + dt.timedelta(seconds=30))] == [
        keys.current.kid
    ]
    assert [key.kid for key in keys.accepted(rotated_at + dt.timedelta(days=1))] == [
        keys.current.kid
    ]


def test_without_a_previous_key_only_the_current_one_is_accepted(store: KeyStore) -> None:
    keys = store.load()

    assert keys.previous is None
    assert keys.previous_accepted_until() is None
    assert [key.kid for key in keys.accepted(keys.current.issued_at)] == [keys.current.kid]


# --- an empty folder ------------------------------------------------------------------------


def test_loading_an_empty_folder_says_which_command_creates_the_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")

    with pytest.raises(SigningKeyMissing) as raised:
        store.load()

    assert str(raised.value) == (
        f"The registry token service has no signing key in {tmp_path / 'keys'}. "
        f"{INIT_HINT} (it creates the CA the registry trusts and a signing key)."
    )


def test_rotating_an_empty_folder_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")

    with pytest.raises(SigningKeyMissing) as raised:
        store.rotate()

    assert str(raised.value) == (
        f"No registry signing keys in {tmp_path / 'keys'}: "
        "run `python manage.py registry_keys init` first."
    )
    assert not store.directory.exists()


# --- the management command -----------------------------------------------------------------


@pytest.fixture
def keys_dir(tmp_path: Path, settings) -> Path:
    """REGISTRY_KEYS_DIR moved to a new folder (``key_store()`` keeps one store per folder)."""
    settings.REGISTRY_KEYS_DIR = str(tmp_path / "k")
    return tmp_path / "k"


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("registry_keys", *args, stdout=out)
    return out.getvalue().splitlines()


def test_registry_keys_init_creates_the_keys_and_describes_them(keys_dir: Path) -> None:
    lines = run("init")

    current = KeyStore(keys_dir).load().current
    assert lines == [
        f"Created the registry keys in {keys_dir}",
        f"CA certificate (the registry's rootcertbundle): {keys_dir / 'ca.crt'}",
        describe("current signing key", current),
    ]
    assert KID.fullmatch(current.kid)


def test_registry_keys_init_a_second_time_changes_nothing(keys_dir: Path) -> None:
    run("init")
    before = {path.name: path.read_bytes() for path in keys_dir.iterdir()}

    lines = run("init")

    current = KeyStore(keys_dir).load().current
    assert lines == [
        f"Registry keys already exist in {keys_dir}; nothing changed. "
        "`registry_keys rotate` issues a new signing key.",
        f"CA certificate (the registry's rootcertbundle): {keys_dir / 'ca.crt'}",
        describe("current signing key", current),
    ]
    assert {path.name: path.read_bytes() for path in keys_dir.iterdir()} == before


def test_registry_keys_rotate_lists_the_current_and_the_previous_key(
    keys_dir: Path, settings
) -> None:
    settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS = 7200
    run("init")
    old = KeyStore(keys_dir).load().current

    lines = run("rotate")

    keys = KeyStore(keys_dir).load()
    assert keys.previous is not None
    assert keys.previous.kid == old.kid
    until = keys.current.issued_at + dt.timedelta(seconds=7200)
    assert lines == [
        "Issued a new signing key from the same CA.",
        "The previous key's tokens stay valid until they expire; its refresh tokens are "
        f"accepted until {until:%Y-%m-%d %H:%M:%S} UTC (7200s). Registries need no restart.",
        f"CA certificate (the registry's rootcertbundle): {keys_dir / 'ca.crt'}",
        describe("current signing key", keys.current),
        describe("previous signing key", keys.previous),
    ]


def test_registry_keys_rotate_without_keys_fails_with_the_init_hint(keys_dir: Path) -> None:
    with pytest.raises(CommandError) as raised:
        run("rotate")

    assert "run `python manage.py registry_keys init` first" in str(raised.value)
    assert not keys_dir.exists()


def test_registry_keys_show_without_keys_fails_with_the_init_hint(keys_dir: Path) -> None:
    with pytest.raises(CommandError) as raised:
        run("show")

    assert INIT_HINT in str(raised.value)
    assert not keys_dir.exists()


def test_init_issues_a_missing_signing_key_from_the_existing_ca(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init()
    ca = store.path("ca.crt").read_bytes(), store.path("ca.key").read_bytes()
    store.path("signing.pem").unlink()  # a crash between the files, or a careless clean-up

    assert store.init() is True

    assert (store.path("ca.crt").read_bytes(), store.path("ca.key").read_bytes()) == ca
    ca_certificate = x509.load_pem_x509_certificate(ca[0])
    store.load().current.certificate.verify_directly_issued_by(ca_certificate)


def test_init_refuses_a_folder_with_half_a_ca(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init()
    store.path("ca.key").unlink()
    store.path("signing.pem").unlink()  # a key to issue, and no CA key to issue it with

    with pytest.raises(SigningKeyMissing) as excinfo:
        store.init()

    assert str(excinfo.value).startswith(f"{store.directory} holds only one of ca.key and ca.crt.")
    assert not store.path("ca.key").exists()


def test_key_changes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init()
    store.rotate()

    assert sorted(p.name for p in store.directory.iterdir() if p.name.endswith(".tmp")) == []


def test_signing_certificates_start_in_the_past_for_registries_whose_clock_lags(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init()
    store.rotate()  # rotation issues them the same way

    not_before = store.load().current.certificate.not_valid_before_utc
    assert not_before <= dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)


def test_init_replaces_an_expired_signing_key_from_the_same_ca(tmp_path: Path, settings) -> None:
    store = KeyStore(tmp_path / "keys")
    settings.REGISTRY_SIGNING_CERT_DAYS = 0  # expires as it is issued
    store.init()
    expired = store.load().current
    ca = store.path("ca.crt").read_bytes()
    settings.REGISTRY_SIGNING_CERT_DAYS = 365

    assert store.init() is True

    keys = store.load()
    assert keys.current.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=364)
    assert keys.previous is not None
    assert keys.previous.kid == expired.kid
    assert store.path("ca.crt").read_bytes() == ca
    assert store.init() is False


def test_init_makes_an_existing_folder_private(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)

    KeyStore(folder).init()

    assert mode(folder) == 0o700


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
    monkeypatch.setattr(keys_module, "write_atomic", refused)


def test_init_on_a_read_only_folder_that_holds_the_keys_changes_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init()
    store.path("ca.key").unlink()  # a Secret for the signers: the CA's certificate only
    store.directory.chmod(0o755)
    _read_only(monkeypatch)

    assert KeyStore(store.directory).init() is False
    assert KeyStore(store.directory).exists() is True
    assert KeyStore(store.directory).load().current.kid == store.load().current.kid
    with pytest.raises(SigningKeyMissing, match="holds no ca.key: a new signing key is issued"):
        KeyStore(store.directory).rotate()


def test_registry_keys_init_on_a_read_only_folder_says_the_keys_are_there(
    keys_dir: Path, monkeypatch
) -> None:
    call_command("registry_keys", "init", stdout=StringIO())
    _read_only(monkeypatch)
    out = StringIO()

    call_command("registry_keys", "init", stdout=out)

    assert "already exist" in out.getvalue()
