"""The inventory's totals (``registries.services.usage``): unique blobs per namespace."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from registries import services
from registries.inventory import Manifest, Repository, Tag, UsageDay
from registries.models import State
from tests.registries.factories import RegistryFactory
from tests.registries.factories import inventory_push as _push

pytestmark = pytest.mark.django_db

LAYER, SHARED, CONFIG_A, CONFIG_B = "sha256:l1", "sha256:shared", "sha256:ca", "sha256:cb"


def test_shared_layers_count_once_per_namespace() -> None:
    registry = RegistryFactory(state=State.READY)
    base = f"{registry.namespace}/base"
    app = f"{registry.namespace}/app"
    _push(registry, base, "1", "sha256:m1", {SHARED: 1000, CONFIG_A: 10})
    _push(registry, base, "2", "sha256:m2", {SHARED: 1000, LAYER: 500, CONFIG_B: 10})
    refreshed = _push(registry, app, "latest", "sha256:m1", {SHARED: 1000, CONFIG_A: 10})

    # m1 (100 + 1010) + m2 (100) + LAYER and CONFIG_B (510): each blob once.
    assert refreshed.usage_bytes == 1110 + 100 + 510
    assert (refreshed.usage_repositories, refreshed.usage_tags) == (2, 3)
    assert Repository.objects.get(name=base).bytes == 1110 + 610
    assert Repository.objects.get(name=app).bytes == 1110
    assert Tag.objects.get(repository__name=base, name="2").bytes == 100 + 1510
    today = UsageDay.objects.get(registry=registry, repository="", day=timezone.now().date())
    assert today.bytes == refreshed.usage_bytes


def test_removing_a_tag_frees_only_its_own_blobs() -> None:
    registry = RegistryFactory(state=State.READY)
    base = f"{registry.namespace}/base"
    _push(registry, base, "1", "sha256:m1", {SHARED: 1000})
    _push(registry, base, "2", "sha256:m2", {SHARED: 1000, LAYER: 500})
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        assert services.tags_remove(locked, repository=base, tag="2") == 1
        assert services.manifests_unreferenced_delete(locked) == 1
        refreshed = services.usage_refresh(locked)
    assert refreshed.usage_bytes == 1100
    assert refreshed.usage_tags == 1


def test_the_members_of_a_tagged_index_are_kept_when_unreferenced_manifests_go() -> None:
    registry = RegistryFactory(state=State.READY)
    multi = f"{registry.namespace}/multi"
    member = "sha256:member"
    _push(registry, multi, "amd64", member, {LAYER: 500})
    _push(registry, multi, "latest", "sha256:index", {member: 100, LAYER: 500})
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        assert locked is not None
        services.tags_remove(locked, repository=multi, tag="amd64")
        assert services.manifests_unreferenced_delete(locked) == 0
    assert Manifest.objects.filter(digest=member).exists()


def test_every_write_of_a_tag_stamps_it_by_the_control_planes_clock() -> None:
    """``pushed_at`` is the registry's clock and keeps the latest push; ``updated_at`` is ours,
    moved by every write (what the usage scan compares with its start)."""
    registry = RegistryFactory(state=State.READY)
    base = f"{registry.namespace}/base"
    pushed = timezone.now()
    _push(registry, base, "1", "sha256:m1", {SHARED: 1000}, at=pushed)
    between = timezone.now()
    # The same push again, its event timed by a registry clock behind ours.
    _push(registry, base, "1", "sha256:m1", {SHARED: 1000}, at=pushed - timedelta(seconds=5))

    tag = Tag.objects.get(repository__name=base, name="1")
    assert tag.pushed_at == pushed
    assert tag.updated_at >= between
