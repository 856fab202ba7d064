"""``python manage.py registry_backend``: the registry backends from a shell or a script.

- ``list``: one line a backend (name, state, weight, capacity, registries, public host, service,
  API URL);
- ``add NAME --api-url URL --public-host HOST --service SERVICE [--storage s3] [--weight 100]
  [--capacity N] [--label region=eu-west ...] [--draining] [--gc-config PATH]``;
- ``set NAME [--weight N] [--capacity N|none] [--public-host HOST] [--api-url URL]
  [--service SERVICE] [--label k=v ...] [--state active|draining] [--gc-config PATH|""]``.

``--gc-config``: the absolute path of the registry configuration its replicas run on, as the
maintenance workers see it (garbage collection; blank: ``REGISTRY_GC_CONFIG``).

The same services as the console and ``/v2/operator/registry-backends``; bad input exits 1 with
what is wrong and writes nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db.models import Count, Q

from clusters.interface import AuditedCommand
from registries.backends import Backend
from registries.models import BackendState, RegistryBackend, State, StorageKind
from registries.services.backends import backend_create, backend_update

GC_CONFIG_HELP = (
    "the registry configuration its replicas run on (absolute path; for garbage collection)"
)


def _labels(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    labels = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise CommandError(f"Give each --label as key=value, not {value!r}.")
        labels[key] = text
    return labels


def _capacity(value: str) -> int | None:
    return None if value.lower() in ("none", "") else int(value)


class Command(AuditedCommand):
    help = "List, add and change registry backends."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="the backends")
        add = sub.add_parser("add", help="add a backend")
        add.add_argument("name")
        add.add_argument("--api-url", required=True)
        add.add_argument("--public-host", required=True)
        add.add_argument("--service", required=True, help="its token service")
        add.add_argument("--storage", default=StorageKind.FILESYSTEM, choices=StorageKind.values)
        add.add_argument("--weight", type=int, default=100)
        add.add_argument("--capacity", type=_capacity, default=None)
        add.add_argument("--label", action="append", help="key=value (repeat)")
        add.add_argument("--draining", action="store_true", help="add it draining")
        add.add_argument("--gc-config", default="", help=GC_CONFIG_HELP)
        change = sub.add_parser("set", help="change a backend")
        change.add_argument("name")
        change.add_argument("--api-url")
        change.add_argument("--public-host")
        change.add_argument("--service")
        change.add_argument("--weight", type=int)
        change.add_argument("--capacity", type=_capacity, default=argparse.SUPPRESS)
        change.add_argument("--label", action="append", help="key=value (repeat; replaces all)")
        change.add_argument("--state", choices=BackendState.values)
        change.add_argument("--gc-config", help=f'{GC_CONFIG_HELP}; "" clears it')

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in _errors(exc))) from exc

    def _list(self, options: dict[str, Any]) -> None:
        rows = RegistryBackend.objects.annotate(
            total=Count("registries", filter=~Q(registries__state=State.DELETED))
        ).order_by("name")
        for row in rows:
            backend = Backend.of(row)
            self.stdout.write(
                f"{row.name}\t{row.state}\tweight={row.weight}\tcapacity={row.capacity}\t"
                f"registries={row.total}\t{backend.public_host}\t{backend.token_service}\t"
                f"{backend.api_url}"
            )

    def _add(self, options: dict[str, Any]) -> None:
        backend = backend_create(
            name=options["name"],
            api_url=options["api_url"],
            public_host=options["public_host"],
            token_service=options["service"],
            storage=options["storage"],
            labels=_labels(options["label"]) or {},
            weight=options["weight"],
            capacity=options["capacity"],
            state=BackendState.DRAINING if options["draining"] else BackendState.ACTIVE,
            gc_config=options["gc_config"],
        )
        self.stdout.write(f"Added registry backend {backend.name} ({backend.state}).")

    def _set(self, options: dict[str, Any]) -> None:
        backend = RegistryBackend.objects.filter(name=options["name"]).first()
        if backend is None:
            raise CommandError(f"No registry backend {options['name']!r}.")
        names = {"api_url": "api_url", "public_host": "public_host", "service": "token_service"}
        changes: dict[str, Any] = {
            field: options[option] for option, field in names.items() if options[option]
        }
        for option in ("weight", "state", "gc_config"):
            if options[option] is not None:
                changes[option] = options[option]
        if "capacity" in options:  # given ("none" clears it)
            changes["capacity"] = options["capacity"]
        if options["label"] is not None:
            changes["labels"] = _labels(options["label"])
        if not changes:
            raise CommandError("Nothing to change: give at least one option.")
        backend = backend_update(backend=backend, **changes)
        self.stdout.write(f"Changed registry backend {backend.name}: {', '.join(sorted(changes))}.")


def _errors(exc: ValidationError) -> list[tuple[str, list[str]]]:
    if hasattr(exc, "error_dict"):
        return list(exc.message_dict.items())
    return [("error", exc.messages)]
