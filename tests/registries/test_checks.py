"""``manage.py check`` names registry misconfigurations before anything starts."""

from __future__ import annotations

from pathlib import Path

from registries.checks import check_registry_settings
from registries.keys import KeyStore


def ids(settings) -> list[str]:
    return [message.id for message in check_registry_settings(None)]


def test_the_tests_configuration_passes(settings) -> None:
    assert ids(settings) == []


def test_missing_signing_keys_are_named_with_the_command_that_creates_them(
    settings, tmp_path: Path
) -> None:
    settings.REGISTRY_KEYS_DIR = str(tmp_path / "keys")

    [warning] = check_registry_settings(None)

    assert warning.id == "registries.W002"
    assert warning.hint == "Run `python manage.py registry_keys init`."


def test_a_token_realm_that_is_not_a_url_is_an_error(settings) -> None:
    settings.REGISTRY_TOKEN_REALM = "controlplane/registry/token"
    assert ids(settings) == ["registries.E004"]


def test_a_signing_key_that_expires_within_30_days_is_named_with_the_command_to_rotate(
    settings, tmp_path: Path
) -> None:
    settings.REGISTRY_KEYS_DIR = str(tmp_path / "keys")
    settings.REGISTRY_SIGNING_CERT_DAYS = 29
    KeyStore(settings.REGISTRY_KEYS_DIR).init()

    [warning] = check_registry_settings(None)

    assert warning.id == "registries.W003"
    assert warning.msg.startswith("The registry token signing certificate expires at ")
    assert warning.hint == "Run `python manage.py registry_keys rotate` (no registry restart)."
