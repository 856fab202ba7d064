"""``python manage.py registry_usage_scan (--cluster ID | --all)``: run the usage scan now, in
this process, for one cluster's registry or every ready registry, one line each as it goes:

    [1/2] ✔ acme/0123456789ab: 2 repositories, 3 tags, 1,104,233 bytes; fetched 2 manifests,
          tags +3 ~0 -0, in 0.21 s
    [2/2] ✘ acme/ba9876543210: The registry did not answer (connection refused)

The same service as the periodic rounds (``registries.services.registry_usage_scan``); it does
not change when the registries are next due. Exits 1 if any scan failed.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registries.models import Registry
from registries.services import registry_usage_scan


class Command(BaseCommand):
    help = "Rebuild registries' usage and inventory from the registry now."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--cluster", type=uuid.UUID, help="the cluster's id")
        which.add_argument("--all", action="store_true", help="every ready registry")

    def handle(self, *args: Any, **options: Any) -> None:
        ready = Registry.objects.ready()
        if options["cluster"] is not None:
            ready = ready.filter(cluster_id=options["cluster"])
        registries = list(ready.order_by("namespace").values_list("pk", "namespace"))
        if not registries:
            raise CommandError(
                "No ready registry to scan"
                + (f" for cluster {options['cluster']}." if options["cluster"] else ".")
            )
        failed = 0
        for number, (registry_id, namespace) in enumerate(registries, start=1):
            progress = f"[{number}/{len(registries)}] " if len(registries) > 1 else ""
            result = registry_usage_scan(registry_id=registry_id)
            if result is None:
                self.stdout.write(f"{progress}- {namespace}: no longer ready, skipped")
            elif result.ok:
                self.stdout.write(
                    f"{progress}✔ {namespace}: {result.repositories} repositories, "
                    f"{result.tags} tags, {result.bytes:,} bytes; fetched {result.fetched} "
                    f"manifests, tags +{result.added} ~{result.updated} -{result.removed}, "
                    f"in {result.duration.total_seconds():.2f} s"
                )
            else:
                failed += 1
                self.stderr.write(f"{progress}✘ {namespace}: {result.error}")
        if failed:
            raise CommandError(f"{failed} of {len(registries)} scans failed; see the log.")
