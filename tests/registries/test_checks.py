"""``manage.py check`` names registry misconfigurations before anything starts."""

from __future__ import annotations

import pytest

from registries.checks import check_registry_settings
from registries.key_files import KeyFolder
from registries.key_store import key_store
from registries.services.signing_keys import rotate_keys

pytestmark = pytest.mark.django_db


def check() -> list:
    """The checks as `migrate` and `check --database default` run them (with the database)."""
    return check_registry_settings(None, databases=["default"])


def ids(settings) -> list[str]:
    return [message.id for message in check()]


def test_the_tests_configuration_passes(settings) -> None:
    assert ids(settings) == []


def test_missing_signing_keys_are_named_with_the_commands_that_create_them(
    settings, no_signing_keys
) -> None:
    [warning] = check()

    assert warning.id == "registries.W002"
    assert warning.hint == (
        "Run `python manage.py migrate`, then `python manage.py registry_keys init`."
    )


def test_a_malformed_key_encryption_key_is_an_error_naming_the_item_not_its_value(
    settings,
) -> None:
    settings.REGISTRY_KEYS_ENCRYPTION_KEYS = "not-a-fernet-key-but-secret"

    [error] = check()

    assert error.id == "registries.E005"
    assert "key 1 of 1 is not a Fernet key" in error.msg
    assert "not-a-fernet-key-but-secret" not in error.msg


def test_without_databases_the_checks_query_nothing(
    settings, no_signing_keys, django_assert_num_queries
) -> None:
    with django_assert_num_queries(0):
        assert check_registry_settings(None) == []


def test_a_token_realm_that_is_not_a_url_is_an_error(settings) -> None:
    settings.REGISTRY_TOKEN_REALM = "controlplane/registry/token"
    assert ids(settings) == ["registries.E004"]


def test_a_signing_key_that_expires_within_30_days_is_named_with_the_command_to_rotate(
    settings,
) -> None:
    settings.REGISTRY_SIGNING_CERT_DAYS = 29
    rotate_keys(KeyFolder(settings.REGISTRY_KEYS_DIR))
    key_store().forget()

    [warning] = check()

    assert warning.id == "registries.W003"
    assert warning.msg.startswith("The registry token signing certificate expires at ")
    assert warning.hint == (
        "Run `python manage.py registry_keys rotate` where the CA's private key is (no "
        "registry restart)."
    )
