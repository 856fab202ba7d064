"""The usage scan (``registries.services.registry_usage_scan``) against the session's real
Distribution registry of this module's own, configured to send no notification at all (whatever
the inventory holds here, the scan found), images pushed with skopeo with the agent token.

Expected figures are worked out from the pushed OCI layout's own files (``tests.support.images``),
not by the code under test: storage is the sum of the unique blobs (manifests, configs, layers)
of the namespace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from registries import services
from registries.demo_image import write_oci_layout
from registries.drivers.distribution import shared_session
from registries.inventory import Manifest, Repository, Tag
from registries.models import Registry
from registries.services import UsageScanResult, registry_usage_scan
from registries.services import usage_scan as usage_scan_module
from tests.controlplane.test_metrics import delta, scrape  # noqa: F401 - a fixture
from tests.support.containers import ok
from tests.support.images import OCI_INDEX, add_index, add_variant, tagged, unique_blobs
from tests.support.processes import RegistryProcess, closed_url

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server"),
]


@pytest.fixture(scope="module")
def registry_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """Instead of the session's registry: one whose configuration sends no notification."""
    with override_settings(REGISTRY_NOTIFICATIONS_URL="", REGISTRY_NOTIFICATIONS_TOKEN=""):
        registry = RegistryProcess(tmp_path_factory.mktemp("silent-registry")).start()
    config = yaml.safe_load(registry.config_path.read_text())
    endpoints = config.get("notifications", {}).get("endpoints", [])
    assert all(endpoint.get("disabled") for endpoint in endpoints), endpoints
    yield registry
    registry.stop()


@pytest.fixture
def layout(workdir: Path) -> Path:
    """An OCI layout with two images sharing their layer: ``latest`` and ``v2``."""
    path = workdir / "image"
    write_oci_layout(path, "counted by the usage scan")
    add_variant(path, "v2", label="two")
    return path


def push(skopeo, layout: Path, cluster, pushes: dict[str, str], *, all: bool = False) -> None:
    """``{repository:tag in the namespace: the layout's tag}``, pushed with the agent token."""
    for target, tag in pushes.items():
        ok(skopeo.push(layout, f"{cluster.url}/{target}", cluster.secret, tag=tag, all=all))


def scan(registry: Registry) -> UsageScanResult:
    result = registry_usage_scan(registry_id=registry.pk)
    assert result is not None
    assert result.ok, result.error
    registry.refresh_from_db()
    return result


def size(blobs: dict[str, int]) -> int:
    return sum(blobs.values())


def tags(registry: Registry) -> dict[str, str]:
    """``{repository:tag: digest}`` as the inventory has them."""
    rows = Tag.objects.filter(repository__registry=registry)
    return {
        f"{repository.rsplit('/', 1)[-1]}:{name}": digest
        for repository, name, digest in rows.values_list("repository__name", "name", "digest")
    }


@contextmanager
def requests_to_the_registry() -> Iterator[list[tuple[str, str]]]:
    """``(method, path)`` of every request this thread's driver session sends meanwhile."""
    session, seen = shared_session(), []

    def record(response: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((response.request.method, urlsplit(response.url).path))

    session.hooks["response"].append(record)
    try:
        yield seen
    finally:
        session.hooks["response"].remove(record)


def test_a_push_no_notification_announced_is_found_and_shared_layers_count_once(
    ready_cluster, skopeo, layout: Path
) -> None:
    a = ready_cluster("A")
    push(skopeo, layout, a, {"app:1": "latest", "app:2": "v2", "base:1": "latest"})
    inspected = json.loads(ok(skopeo.inspect(f"{a.url}/app:2", a.secret)).stdout)
    assert inspected["Digest"] == tagged(layout, "v2")  # pushed as written
    assert not Tag.objects.filter(repository__registry=a.registry).exists()

    result = scan(a.registry)

    latest, v2 = unique_blobs(layout, "latest"), unique_blobs(layout, "v2")
    shared = set(latest) & set(v2)
    assert len(shared) == 1
    assert size({d: latest[d] for d in shared}) > 100_000  # the layer
    everything = unique_blobs(layout, "latest", "v2")
    assert size(everything) == size(latest) + size(v2) - size({d: v2[d] for d in shared})
    assert (result.added, result.updated, result.removed, result.fetched) == (3, 0, 0, 2)
    registry = a.registry
    assert (registry.usage_bytes, registry.usage_repositories, registry.usage_tags) == (
        size(everything),
        2,
        3,
    )
    assert (result.bytes, result.repositories, result.tags) == (size(everything), 2, 3)
    assert dict(Repository.objects.filter(registry=registry).values_list("name", "bytes")) == {
        f"{a.namespace}/app": size(everything),
        f"{a.namespace}/base": size(latest),
    }
    assert tags(registry) == {
        "app:1": tagged(layout, "latest"),
        "app:2": tagged(layout, "v2"),
        "base:1": tagged(layout, "latest"),
    }
    assert Tag.objects.get(repository__name=f"{a.namespace}/app", name="2").bytes == size(v2)
    assert registry.usage_scanned_at is not None
    assert registry.last_push_at is not None


def test_a_deleted_tag_is_removed_by_the_next_scan(ready_cluster, skopeo, layout: Path) -> None:
    a = ready_cluster("A")
    push(skopeo, layout, a, {"app:1": "latest", "app:2": "v2"})
    scan(a.registry)
    ok(skopeo.delete(f"{a.url}/app:2", a.secret))
    # A repository the registry's catalog does not list (any more), with no tag: forgotten.
    Repository.objects.create(registry=a.registry, name=f"{a.namespace}/gone")

    result = scan(a.registry)

    assert (result.added, result.removed, result.fetched) == (0, 1, 0)
    assert tags(a.registry) == {"app:1": tagged(layout, "latest")}
    assert a.registry.usage_repositories == 1
    assert a.registry.usage_bytes == size(unique_blobs(layout, "latest"))
    assert not Manifest.objects.filter(digest=tagged(layout, "v2")).exists()
    # Distribution keeps the repository in its catalog: so does the inventory, even emptied.
    ok(skopeo.delete(f"{a.url}/app:1", a.secret))
    scan(a.registry)
    assert (a.registry.usage_bytes, a.registry.usage_repositories, a.registry.usage_tags) == (
        0,
        1,
        0,
    )


def test_a_multi_arch_index_counts_its_members_and_their_blobs(
    ready_cluster, skopeo, layout: Path
) -> None:
    a = ready_cluster("A")
    add_variant(layout, "s390x", label="other", architecture="s390x")
    index = add_index(layout, "multi", members=["latest", "s390x"])
    push(skopeo, layout, a, {"multi:1": "multi"}, all=True)
    # An event recorded the index without its members' blobs (it cannot know them).
    with transaction.atomic():
        locked = services.inventory_lock(a.registry.pk)
        assert locked is not None
        services.manifest_put(
            locked, digest=index, media_type=OCI_INDEX, size=1, blobs={}, complete=False
        )

    result = scan(a.registry)

    everything = unique_blobs(layout, "multi")
    assert result.fetched == 3  # the index and its two members
    manifest = Manifest.objects.get(registry=a.registry, digest=index)
    assert (manifest.media_type, manifest.size, manifest.complete) == (
        OCI_INDEX,
        everything[index],
        True,
    )
    assert manifest.blobs == {d: s for d, s in everything.items() if d != index}
    assert {tagged(layout, "latest"), tagged(layout, "s390x")} <= set(manifest.blobs)
    assert (a.registry.usage_bytes, a.registry.usage_tags) == (size(everything), 1)


def test_a_rescan_of_an_unchanged_registry_fetches_no_manifest(
    ready_cluster, skopeo, layout: Path
) -> None:
    a = ready_cluster("A")
    push(skopeo, layout, a, {"app:1": "latest", "app:2": "latest", "app:3": "v2"})
    assert scan(a.registry).fetched == 2
    before = (a.registry.usage_bytes, tags(a.registry))

    with requests_to_the_registry() as sent:
        result = scan(a.registry)

    manifests = [(method, path) for method, path in sent if "/manifests/" in path]
    assert [method for method, _ in manifests] == ["HEAD"] * 3  # one a tag, to see its digest
    assert (result.fetched, result.added, result.updated, result.removed) == (0, 0, 0, 0)
    assert (a.registry.usage_bytes, tags(a.registry)) == before


def between_read_and_apply(monkeypatch: pytest.MonkeyPatch, registry: Registry, events: Any) -> Any:
    """Make the scan read the registry, then, before it applies what it read, apply
    ``events(locked registry)`` in a transaction of their own, as the event path does. Returns
    the real read, to put back."""
    read = usage_scan_module.namespace_inventory

    def events_applied_meanwhile(*args: Any, **kwargs: Any) -> Any:
        seen = read(*args, **kwargs)
        with transaction.atomic():
            locked = services.inventory_lock(registry.pk)
            assert locked is not None
            events(locked)
            services.usage_refresh(locked)
        return seen

    monkeypatch.setattr(usage_scan_module, "namespace_inventory", events_applied_meanwhile)
    return read


@pytest.mark.parametrize("registry_clock_behind", [timedelta(0), timedelta(seconds=5)])
def test_a_tag_pushed_after_the_scan_started_survives_it(
    ready_cluster,
    skopeo,
    layout: Path,
    monkeypatch: pytest.MonkeyPatch,
    registry_clock_behind: timedelta,
) -> None:
    """Whatever the registry's clock says: the events' times (``pushed_at``) are the registry's,
    here up to seconds behind the control plane's, so earlier than the scan's start."""
    a = ready_cluster("A")
    push(skopeo, layout, a, {"app:1": "latest", "app:2": "v2"})
    scan(a.registry)
    app, v2 = f"{a.namespace}/app", tagged(layout, "v2")

    def push_of_app_3_and_app_1_moved_to_v2(locked: Registry) -> None:
        at = timezone.now() - registry_clock_behind
        for tag in ("3", "1"):
            services.tag_put(locked, repository=app, tag=tag, digest=v2, at=at)

    read = between_read_and_apply(monkeypatch, a.registry, push_of_app_3_and_app_1_moved_to_v2)
    result = scan(a.registry)

    assert (result.added, result.updated, result.removed) == (0, 0, 0)
    assert tags(a.registry) == {"app:1": v2, "app:2": v2, "app:3": v2}
    # With no event meanwhile, the next scan makes the inventory what the registry holds.
    monkeypatch.setattr(usage_scan_module, "namespace_inventory", read)
    result = scan(a.registry)
    assert (result.updated, result.removed) == (1, 1)
    assert tags(a.registry) == {"app:1": tagged(layout, "latest"), "app:2": v2}


def test_a_tag_deleted_after_the_scan_read_it_does_not_come_back_without_its_manifest(
    ready_cluster, skopeo, layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app:2 is the only tag of v2's manifest, known to the inventory (so the scan does not fetch
    it). Deleted after the scan read the registry: its manifest's record goes with it."""
    a = ready_cluster("A")
    push(skopeo, layout, a, {"app:1": "latest", "app:2": "v2"})
    scan(a.registry)
    app, v2 = f"{a.namespace}/app", tagged(layout, "v2")
    latest = size(unique_blobs(layout, "latest"))

    def deletion_of_v2(locked: Registry) -> None:
        ok(skopeo.delete(f"{a.url}/app:2", a.secret))
        services.tags_remove(locked, repository=app, digest=v2)
        services.manifests_unreferenced_delete(locked)

    read = between_read_and_apply(monkeypatch, a.registry, deletion_of_v2)
    result = scan(a.registry)

    assert (result.fetched, result.added, result.updated, result.removed) == (0, 0, 0, 0)
    assert tags(a.registry) == {"app:1": tagged(layout, "latest")}
    assert (a.registry.usage_tags, a.registry.usage_bytes) == (1, latest)
    assert not Tag.objects.filter(bytes=0).exists()
    # The next scan agrees; had the tag really been there, it would fetch its manifest and add it.
    monkeypatch.setattr(usage_scan_module, "namespace_inventory", read)
    push(skopeo, layout, a, {"app:3": "v2"})
    result = scan(a.registry)
    assert (result.fetched, result.added, result.removed) == (1, 1, 0)
    assert tags(a.registry) == {"app:1": tagged(layout, "latest"), "app:3": v2}
    assert a.registry.usage_bytes == size(unique_blobs(layout, "latest", "v2"))


def test_a_registry_that_does_not_answer_leaves_the_inventory_as_it_was(
    ready_cluster,
    skopeo,
    layout: Path,
    settings,
    caplog: pytest.LogCaptureFixture,
    scrape,  # noqa: F811
) -> None:
    a = ready_cluster("A")
    push(skopeo, layout, a, {"app:1": "latest"})
    before = scrape()
    scan(a.registry)
    scanned = (a.registry.usage_scanned_at, a.registry.usage_bytes, tags(a.registry))
    settings.REGISTRY_URL = closed_url()

    result = registry_usage_scan(registry_id=a.registry.pk)
    after = scrape()

    assert result is not None
    assert (result.ok, result.error) == (False, "The registry did not answer (connection refused)")
    a.registry.refresh_from_db()
    assert (a.registry.usage_scanned_at, a.registry.usage_bytes, tags(a.registry)) == scanned
    assert [r.msg for r in caplog.records if r.msg.startswith("registry.usage_scan")] == [
        "registry.usage_scan.scanned",
        "registry.usage_scan.failed",
    ]
    counted = {
        outcome: delta(
            before, after, "controlplane_usage_scans_total", backend="default", outcome=outcome
        )
        for outcome in ("scanned", "failed")
    }
    assert counted == {"scanned": 1, "failed": 1}
    assert delta(before, after, "controlplane_usage_scan_seconds_count", outcome="failed") == 1
    assert (
        delta(before, after, "controlplane_usage_scan_manifests_fetched_total", backend="default")
        == 1
    )


def test_the_command_scans_a_clusters_registry_now_and_says_what_it_found(
    ready_cluster, skopeo, layout: Path, capsys: pytest.CaptureFixture[str], settings
) -> None:
    a, b = ready_cluster("A"), ready_cluster("B")
    push(skopeo, layout, a, {"app:1": "latest", "app:2": "v2"})

    call_command("registry_usage_scan", "--cluster", str(a.cluster.pk))

    out = capsys.readouterr().out
    everything = size(unique_blobs(layout, "latest", "v2"))
    assert out.startswith(
        f"✔ {a.namespace}: 1 repositories, 2 tags, {everything:,} bytes; fetched 2 manifests, "
        "tags +2 ~0 -0, in "
    )
    b.registry.refresh_from_db()
    assert b.registry.usage_scanned_at is None  # not asked for
    settings.REGISTRY_URL = closed_url()
    with pytest.raises(CommandError, match="^2 of 2 scans failed; see the log.$"):
        call_command("registry_usage_scan", "--all")
    first, second = sorted([a.namespace, b.namespace])  # in namespace order
    assert capsys.readouterr().err == (
        f"[1/2] ✘ {first}: The registry did not answer (connection refused)\n"
        f"[2/2] ✘ {second}: The registry did not answer (connection refused)\n"
    )
