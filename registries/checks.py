"""System checks (``manage.py check``) for registry settings, so a typo fails at start-up."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import DatabaseError
from django.utils import timezone

from registries import key_encryption
from registries.drivers import DRIVERS
from registries.key_store import INIT_COMMAND, key_store
from registries.keys import SigningKeyMissing
from registries.services.placement import STRATEGIES

SIGNING_KEY_EXPIRY_WARNING = timedelta(days=30)


def check_registry_settings(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if settings.REGISTRY_DRIVER not in DRIVERS:
        errors.append(
            checks.Error(
                f"REGISTRY_DRIVER={settings.REGISTRY_DRIVER!r} is not a known driver.",
                hint=f"Use one of: {', '.join(DRIVERS)}.",
                id="registries.E001",
            )
        )
    if not settings.REGISTRY_URL.startswith(("http://", "https://")):
        errors.append(
            checks.Error(
                f"REGISTRY_URL={settings.REGISTRY_URL!r} has no http:// or https:// scheme.",
                hint="Set it to the registry's API address, e.g. http://127.0.0.1:5000.",
                id="registries.E002",
            )
        )
    if settings.REGISTRY_PROVISION_MAX_ATTEMPTS < 1:
        errors.append(
            checks.Error(
                "REGISTRY_PROVISION_MAX_ATTEMPTS must be at least 1.", id="registries.E003"
            )
        )
    if not settings.REGISTRY_TOKEN_REALM.startswith(("http://", "https://")):
        errors.append(
            checks.Error(
                f"REGISTRY_TOKEN_REALM={settings.REGISTRY_TOKEN_REALM!r} is not an http(s) URL.",
                hint="Set it to this service's token endpoint as clients reach it, e.g. "
                "https://controlplane.example/registry/token.",
                id="registries.E004",
            )
        )
    errors.extend(_placement_messages())
    errors.extend(_kek_messages())
    if kwargs.get("databases"):
        # Django's convention: checks that query run only when given databases (`migrate`,
        # `check --database default`), not at every command's start.
        errors.extend(_signing_key_messages())
    # A retried message stays unacknowledged through its countdown, then through its run.
    longest_hold = settings.REGISTRY_PROVISION_BACKOFF_MAX_SECONDS + settings.CELERY_TASK_TIME_LIMIT
    uses_redis = not settings.CELERY_BROKER_URL.startswith("filesystem://")
    if uses_redis and longest_hold >= settings.CELERY_VISIBILITY_TIMEOUT:
        errors.append(
            checks.Warning(
                f"CELERY_VISIBILITY_TIMEOUT={settings.CELERY_VISIBILITY_TIMEOUT} is not above the "
                f"longest retry countdown plus the task time limit ({longest_hold}s): Redis would "
                "give a message to a second worker while the first still holds it.",
                hint="Raise CELERY_VISIBILITY_TIMEOUT.",
                id="registries.W001",
            )
        )
    return errors


def _placement_messages() -> list[checks.CheckMessage]:
    """``REGISTRY_PLACEMENT`` names a strategy and ``REGISTRY_PLACEMENT_LABELS`` is an object of
    strings (as backends' labels are): otherwise every placement would fail or fall back."""
    errors: list[checks.CheckMessage] = []
    if settings.REGISTRY_PLACEMENT not in STRATEGIES:
        errors.append(
            checks.Error(
                f"REGISTRY_PLACEMENT={settings.REGISTRY_PLACEMENT!r} is not a placement strategy.",
                hint=f"Use one of: {', '.join(STRATEGIES)}.",
                id="registries.E006",
            )
        )
    labels = settings.REGISTRY_PLACEMENT_LABELS
    if not isinstance(labels, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in labels.items()
    ):
        errors.append(
            checks.Error(
                f"REGISTRY_PLACEMENT_LABELS={json.dumps(labels, default=str)} is not a JSON "
                "object of strings.",
                hint="Give the labels the backends of new registries must carry, e.g. "
                '{"region": "eu-west"}, or {} for any backend.',
                id="registries.E007",
            )
        )
    return errors


def _kek_messages() -> list[checks.CheckMessage]:
    """The KEK setting: well-formed Fernet keys (the message names which, never its value)."""
    try:
        key_encryption.kek()
    except SigningKeyMissing as exc:
        return [checks.Error(str(exc), id="registries.E005")]
    return []


def _signing_key_messages() -> list[checks.CheckMessage]:
    """The signing key in the database (nothing before ``migrate`` made its table)."""
    try:
        if not key_store().exists():
            return [
                checks.Warning(
                    "No registry token signing key in the database: the token endpoint answers "
                    "503 and provisioning fails until there is.",
                    hint=f"Run `python manage.py migrate`, then `{INIT_COMMAND}`.",
                    id="registries.W002",
                )
            ]
        expires_at = key_store().load().current.expires_at
    except DatabaseError:
        return []  # no tables yet: `migrate` runs before `registry_keys init`
    except SigningKeyMissing as exc:
        return [checks.Warning(str(exc), id="registries.W002")]
    if expires_at - timezone.now() < SIGNING_KEY_EXPIRY_WARNING:
        return [
            checks.Warning(
                f"The registry token signing certificate expires at "
                f"{expires_at:%Y-%m-%d %H:%M} UTC: from then on registries refuse every "
                "token we sign.",
                hint="Run `python manage.py registry_keys rotate` where the CA's private key "
                "is (no registry restart).",
                id="registries.W003",
            )
        ]
    return []


def register() -> None:
    checks.register(check_registry_settings, "registries")
