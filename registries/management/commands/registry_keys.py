"""``python manage.py registry_keys init|rotate|show``: the keys that sign registry tokens.

``init`` creates the CA that registries trust (``ca.crt``, their ``rootcertbundle``) and a first
signing key. ``rotate`` issues a new signing key from the same CA: registries need no restart,
and running services pick it up on their next token. Private keys are written with mode 0600.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registries.keys import SigningKey, SigningKeyMissing, key_store, longest_token_lifetime


class Command(BaseCommand):
    help = "Create (init) or rotate the registry token signing keys in REGISTRY_KEYS_DIR."
    # The checks would warn that the keys this command creates are missing.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["init", "rotate", "show"])

    def handle(self, *args: Any, **options: Any) -> None:
        store = key_store()
        if options["action"] == "init":
            if store.init():
                self.stdout.write(
                    self.style.SUCCESS(f"Created the registry keys in {store.directory}")
                )
            else:
                self.stdout.write(
                    f"Registry keys already exist in {store.directory}; nothing changed. "
                    "`registry_keys rotate` issues a new signing key."
                )
        elif options["action"] == "rotate":
            try:
                keys = store.rotate()
            except SigningKeyMissing as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(self.style.SUCCESS("Issued a new signing key from the same CA."))
            self.stdout.write(
                f"The previous key's tokens stay valid until they expire; its refresh tokens are "
                f"accepted until {keys.previous_accepted_until():%Y-%m-%d %H:%M:%S} UTC "
                f"({longest_token_lifetime()}s). Registries need no restart."
            )
        try:
            keys = store.load()
        except SigningKeyMissing as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"CA certificate (the registry's rootcertbundle): {store.ca_certificate_path}"
        )
        self._describe("current signing key", keys.current)
        if keys.previous is not None:
            self._describe("previous signing key", keys.previous)

    def _describe(self, label: str, key: SigningKey) -> None:
        certificate = key.certificate
        self.stdout.write(
            f"{label}: kid {key.kid}, valid {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
