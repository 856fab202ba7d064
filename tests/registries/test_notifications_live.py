"""The event path end to end: a real Distribution registry configured by ``registry_config``
posts its notifications to the live server's ``/registry/notifications``, a real Celery worker
applies them, and a skopeo push, pull and delete show in the inventory within seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from registries.demo_image import write_oci_layout
from registries.inventory import RegistryNotification, Tag, UsageDay
from registries.models import Registry
from registries.services.notifications import MANIFEST_MEDIA_TYPES
from tests.support.containers import ok
from tests.support.processes import RegistryProcess, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("container_tools"),
]

TOKEN = "notify-token-for-the-live-test"


@pytest.fixture
def notifying_registry(settings, live_server, workdir: Path) -> Iterator[RegistryProcess]:
    """A registry whose configuration sends its events to the live server."""
    settings.REGISTRY_NOTIFICATIONS_URL = f"{live_server.url}/registry/notifications"
    settings.REGISTRY_NOTIFICATIONS_TOKEN = TOKEN
    registry = RegistryProcess(workdir).start()
    yield registry
    registry.stop()


@pytest.fixture
def registry_settings(settings, notifying_registry: RegistryProcess):
    """The control plane provisions on the notifying registry (instead of the session's)."""
    settings.REGISTRY_URL = notifying_registry.url
    settings.REGISTRY_PUBLIC_HOST = notifying_registry.host
    return settings


def _image_bytes(layout: Path, digest: str) -> int:
    """The manifest, its config and its layers, as the inventory counts them."""
    blob = layout / "blobs" / digest.replace(":", "/")
    manifest = json.loads(blob.read_bytes())
    references = [manifest["config"], *manifest["layers"]]
    return blob.stat().st_size + sum(int(reference["size"]) for reference in references)


def test_a_push_pull_and_delete_reach_the_inventory_through_the_events(
    ready_cluster, start_worker, broker_queue, notifying_registry: RegistryProcess, skopeo,
    workdir: Path,
) -> None:  # fmt: skip
    a = ready_cluster("Events")
    broker_queue.drain()  # its provisioning message: the registry is ready already
    worker = start_worker()
    digest = write_oci_layout(workdir / "image", "counted from the events")
    reference = f"{a.url}/base:latest"
    repository = f"{a.namespace}/base"

    ok(skopeo.push(workdir / "image", reference, a.secret))

    def tag_known() -> Tag | None:
        return Tag.objects.filter(repository__registry=a.registry, name="latest").first()

    tag = wait_until(tag_known, timeout=30, what="the pushed tag in the inventory")
    size = _image_bytes(workdir / "image", digest)
    assert (tag.repository.name, tag.digest, tag.bytes) == (repository, digest, size)
    registry = Registry.objects.get(pk=a.registry.pk)
    assert (registry.usage_bytes, registry.usage_repositories, registry.usage_tags) == (size, 1, 1)
    assert registry.last_push_at is not None
    today = UsageDay.objects.get(registry=registry, repository="", day=registry.last_push_at.date())
    assert today.pushes == 1

    ok(skopeo.pull(reference, a.secret, workdir / "pulled"))

    def pulled() -> Tag | None:
        return Tag.objects.filter(pk=tag.pk, last_pulled_at__isnull=False).first()

    wait_until(pulled, timeout=30, what="the pull in the inventory")
    today.refresh_from_db()
    assert today.pulls >= 1

    ok(skopeo.delete(reference, a.secret))

    def forgotten() -> bool:
        # Distribution's last event: the tag's deletion, after the manifest's.
        tag_deleted = RegistryNotification.objects.filter(
            registry=registry, action="delete", target__tag="latest", applied_at__isnull=False
        )
        registry.refresh_from_db()
        return tag_deleted.exists() and not Tag.objects.filter(repository__registry=registry)

    wait_until(forgotten, timeout=30, what="the deletion in the inventory")
    assert (registry.usage_bytes, registry.usage_tags) == (0, 0)
    # Only manifest events were recorded (no blob's push, pull or mount), each applied once.
    rows = list(RegistryNotification.objects.filter(registry=registry))
    assert {row.action for row in rows} == {"push", "pull", "delete"}
    assert all(row.applied_at is not None for row in rows)
    assert all(
        row.target.get("mediaType") in MANIFEST_MEDIA_TYPES
        for row in rows
        if row.action != "delete"
    )
    assert TOKEN not in worker.log()
