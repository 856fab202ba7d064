"""``python manage.py registry_keys init|rotate|status|ca-certificate|reencrypt|create-ca``: the
keys that sign registry tokens, kept in the database (docs/registry-tokens.md).

``init`` (idempotent, after ``migrate``) records the CA that registries trust (created in
``REGISTRY_KEYS_DIR``, or imported from ``ca.key``/``ca.crt`` there), imports signing key files of
an earlier version, and issues a signing key if there is none. ``rotate`` issues a new one from
the same CA, where ``ca.key`` is: every replica signs with it within
``REGISTRY_KEYS_RECHECK_SECONDS``, registries need no restart. ``status`` (``show``) lists the
keys, no secret. ``ca-certificate`` prints the CA certificate (or writes it: ``--output``), the
registries' ``rootcertbundle``. ``reencrypt`` encrypts every private key again with the first
key of ``REGISTRY_KEYS_ENCRYPTION_KEYS`` (KEK rotation). ``create-ca`` only creates a CA in
``REGISTRY_KEYS_DIR`` when neither the database nor the folder has one, without recording it: the
keys Job stores it in its Secret first, then ``init`` records it (deploy/keys_secret.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import connection

from clusters.interface import AuditedCommand
from registries import key_encryption
from registries.key_files import key_folder
from registries.key_store import ca_certificate_pem, key_store
from registries.keys import SigningKeyMissing, longest_token_lifetime
from registries.selectors import signing_key_statuses
from registries.services.signing_keys import create_ca, init_keys, reencrypt_keys, rotate_keys

ACTIONS = ["init", "rotate", "status", "show", "ca-certificate", "reencrypt", "create-ca"]


class Command(AuditedCommand):
    help = "Create (init), rotate or list the registry token signing keys (in the database)."
    # The checks would warn that the keys this command creates are missing.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument(
            "--output", help="ca-certificate: write the certificate to this file (mode 0644)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if "registries_tokensigningkey" not in connection.introspection.table_names():
            raise CommandError(
                "The registry key store's tables do not exist yet: run `python manage.py "
                "migrate` first (the signing keys are kept in the database)."
            )
        action = options["action"]
        try:
            if action == "ca-certificate":
                self._ca_certificate(options["output"])
                return
            if action == "create-ca":
                folder = key_folder()
                if create_ca(folder):
                    self.stdout.write(
                        self.style.SUCCESS(f"Created a registry token CA in {folder.directory}.")
                    )
                else:
                    self.stdout.write("A CA exists already (recorded or in the folder).")
                return
            if action == "init":
                self._init()
            elif action == "rotate":
                keys = rotate_keys(key_folder())
                self.stdout.write(self.style.SUCCESS(f"Issued signing key {keys.current.kid}."))
                self.stdout.write(
                    "Every replica signs with it within REGISTRY_KEYS_RECHECK_SECONDS; the older "
                    f"keys' refresh tokens are accepted for {longest_token_lifetime()}s more. "
                    "Registries need no restart."
                )
            elif action == "reencrypt":
                count = reencrypt_keys()
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Encrypted {count} private key(s) again with the first key of "
                        f"{key_encryption.describe()}."
                    )
                )
            key_store().load()  # the current key decrypts with this KEK
        except SigningKeyMissing as exc:
            raise CommandError(str(exc)) from exc
        self._status()

    def _init(self) -> None:
        folder = key_folder()
        result = init_keys(folder)
        if result.created_ca:
            self.stdout.write(
                self.style.SUCCESS(f"Created the registry token CA in {folder.directory}.")
            )
        elif result.recorded_ca:
            self.stdout.write(self.style.SUCCESS(f"Recorded the CA of {folder.directory}."))
        for kid in result.imported:
            self.stdout.write(
                self.style.SUCCESS(f"Imported signing key {kid} from {folder.directory}.")
            )
        if result.issued:
            self.stdout.write(self.style.SUCCESS(f"Issued signing key {result.issued}."))
        if not result.changed:
            self.stdout.write(
                "Registry keys already exist; nothing changed. `registry_keys rotate` issues a "
                "new signing key."
            )

    def _status(self) -> None:
        path = key_folder().ca_certificate_path
        where = f"{path}" if path.exists() else "`registry_keys ca-certificate --output PATH`"
        self.stdout.write(f"CA certificate (the registry's rootcertbundle): {where}")
        for status in signing_key_statuses():
            self.stdout.write(
                f"{status.role} signing key: kid {status.kid}, issued "
                f"{status.issued_at:%Y-%m-%d %H:%M:%S}, expires {status.expires_at:%Y-%m-%d %H:%M} "
                "UTC"
                + (
                    f", accepted until {status.accepted_until:%Y-%m-%d %H:%M:%S} UTC"
                    if status.accepted_until is not None and status.role != "current"
                    else ""
                )
            )

    def _ca_certificate(self, output: str | None) -> None:
        pem = ca_certificate_pem()
        if pem is None:
            raise CommandError(
                "No registry token CA yet: run `python manage.py registry_keys init`."
            )
        if output is None:
            self.stdout.write(pem.decode(), ending="")
            return
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem)
        path.chmod(0o644)
        self.stdout.write(f"Wrote the CA certificate to {path}.")
