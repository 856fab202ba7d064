"""``python manage.py registry_gc [BACKEND] [--wait]``: collect a registry backend's garbage in a
maintenance window (docs/retention.md#garbage-collection).

Without ``--wait`` it asks for the collection and a maintenance worker runs it. With ``--wait``
it runs the collection in this process (which then needs the registry's binary and storage, as
a maintenance worker does), or follows the one already holding the backend's window, printing
each step as it goes:

    draining: pushes refused; uploads in flight finish (3/60)
    read_only: replicas going read-only (2/2)
    collecting: garbage-collect: 12 blobs marked, 4 blobs and 0 manifests eligible (41)
    ...
    succeeded: freed 24.1 MB; 4 blobs deleted, 1 upload purged; 9 tags verified, 0 missing

and exits 1 if it failed, with the error and what to do.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from clusters.interface import AuditedCommand
from controlplane import humanize
from registries.maintenance import CollectionState, CollectionTrigger, GarbageCollection
from registries.models import DEFAULT_BACKEND, RegistryBackend
from registries.services import CollectionActive, collection_request, collection_run

#: How often ``--wait`` reads a collection another process runs.
FOLLOW_SECONDS = 1.0


def progress_line(collection: GarbageCollection) -> str:
    """``state: message (done/total)``, as the console shows a collection's progress."""
    progress = collection.progress or {}
    done, total = progress.get("done"), progress.get("total")
    counted = f" ({done}/{total})" if total else (f" ({done})" if done else "")
    return f"{collection.state}: {progress.get('message', '')}{counted}"


def outcome_line(collection: GarbageCollection) -> str:
    return (
        f"freed {humanize.size(collection.freed_bytes)}; {collection.blobs_deleted} blobs and "
        f"{collection.manifests_deleted} manifests deleted, {collection.uploads_purged} uploads "
        f"purged; {collection.tags_verified} tags verified, {collection.missing} missing"
    )


class Command(AuditedCommand):
    help = "Collect a registry backend's garbage in a maintenance window."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "backend", nargs="?", default=DEFAULT_BACKEND, help="the backend's name (default)"
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="run it here (or follow the running one) and print its progress",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = RegistryBackend.objects.filter(name=options["backend"]).first()
        if backend is None:
            raise CommandError(f"No registry backend named {options['backend']!r}.")
        wait = options["wait"]
        try:
            collection = collection_request(
                backend, trigger=CollectionTrigger.OPERATOR, actor="manage.py registry_gc",
                enqueue=not wait,
            )  # fmt: skip
        except CollectionActive as exc:
            if not wait:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"Following collection {exc.running.pk}, already running.")
            collection = self.follow(exc.running)
        else:
            if not wait:
                self.stdout.write(
                    f"Collection {collection.pk} of backend {backend.name} queued: a maintenance "
                    f"worker runs it (`manage.py registry_gc {backend.name} --wait` follows it)."
                )
                return
            collection = collection_run(str(collection.pk), on_progress=self.show) or collection
        self.stdout.write(f"{collection.state}: {outcome_line(collection)}")
        if collection.state != CollectionState.SUCCEEDED:
            raise CommandError(collection.error or f"The collection ended {collection.state}.")

    def show(self, collection: GarbageCollection) -> None:
        self.stdout.write(progress_line(collection))
        self.stdout.flush()

    def follow(self, collection: GarbageCollection) -> GarbageCollection:
        shown = ""
        while True:
            line = progress_line(collection)
            if line != shown:
                self.show(collection)
                shown = line
            if collection.finished_at is not None:
                return collection
            time.sleep(FOLLOW_SECONDS)
            collection.refresh_from_db()
