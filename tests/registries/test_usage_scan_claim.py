"""Usage scan rounds: each claims at most ``REGISTRY_USAGE_SCAN_BATCH`` ready registries due for
a scan, longest due first, moves each a period on, and enqueues one scan each on the canaries'
queue. A registry that is not ready is never claimed, and its scan does nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from registries.models import Registry, State
from registries.services import registries_usage_scan_claim, registry_usage_scan
from registries.tasks import run_usage_scans, usage_scan_registry
from tests.registries.factories import RegistryFactory
from tests.registries.test_concurrency import run_together

pytestmark = pytest.mark.django_db


def due_registries(count: int, *, due: datetime) -> list[Registry]:
    """``count`` ready registries, due one minute apart from ``due`` on (the first longest)."""
    return [
        RegistryFactory(state=State.READY, usage_scan_due_at=due + timedelta(minutes=n))
        for n in range(count)
    ]


def test_a_round_claims_at_most_the_batch_longest_due_first_and_moves_them_a_period_on(
    settings,
) -> None:
    settings.REGISTRY_USAGE_SCAN_BATCH = 2
    settings.REGISTRY_USAGE_SCAN_SECONDS = 300
    now = timezone.now()
    registries = due_registries(3, due=now - timedelta(hours=1))
    RegistryFactory(state=State.PENDING, usage_scan_due_at=now - timedelta(days=1))
    RegistryFactory(state=State.DEPROVISIONING, usage_scan_due_at=now - timedelta(days=1))
    later = RegistryFactory(state=State.READY, usage_scan_due_at=now + timedelta(seconds=1))

    claimed = registries_usage_scan_claim(now=now)

    assert claimed == [registry.pk for registry in registries[:2]]
    for registry in registries[:2]:
        registry.refresh_from_db()
        assert registry.usage_scan_due_at == now + timedelta(seconds=300)
    for registry in [registries[2], later]:
        due = registry.usage_scan_due_at
        registry.refresh_from_db()
        assert registry.usage_scan_due_at == due  # not their turn: untouched
    # The next round, at the same moment, takes the one left; then nothing is due.
    assert registries_usage_scan_claim(now=now) == [registries[2].pk]
    assert registries_usage_scan_claim(now=now) == []


def test_every_ready_registry_is_scanned_once_a_period_whatever_its_scans_did(settings) -> None:
    settings.REGISTRY_USAGE_SCAN_BATCH = 2
    settings.REGISTRY_USAGE_SCAN_SECONDS = 300
    now = timezone.now()
    due_registries(5, due=now - timedelta(minutes=10))

    rounds = [registries_usage_scan_claim(now=now + timedelta(minutes=n)) for n in range(6)]

    # Three rounds take all five (none ran its scan); each is due again five minutes after its
    # claim, so the sixth round, at minute 5, takes the first two again.
    assert [len(claimed) for claimed in rounds] == [2, 2, 1, 0, 0, 2]
    assert set(rounds[5]) == set(rounds[0])  # due at the same moment: in key order


def test_a_new_registry_is_due_at_once() -> None:
    registry = RegistryFactory(state=State.READY)

    assert registries_usage_scan_claim(now=timezone.now() + timedelta(seconds=1)) == [registry.pk]


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_rounds_running_at_once_claim_each_due_registry_exactly_once(settings) -> None:
    settings.REGISTRY_USAGE_SCAN_BATCH = 5
    registries = due_registries(20, due=timezone.now() - timedelta(hours=1))
    now = timezone.now()

    claims = run_together(lambda _: registries_usage_scan_claim(now=now))

    claimed = [pk for claim in claims for pk in claim]  # type: ignore[attr-defined]
    assert sorted(claimed) == sorted(registry.pk for registry in registries)  # none twice


def test_a_round_enqueues_one_scan_each_on_the_canaries_queue(settings, broker_queue) -> None:
    settings.REGISTRY_USAGE_SCAN_BATCH = 2
    registries = due_registries(3, due=timezone.now() - timedelta(hours=1))
    broker_queue.drain()

    assert run_usage_scans.apply().get() == [str(r.pk) for r in registries[:2]]

    assert broker_queue.drain("celery") == []
    assert broker_queue.drain("canaries") == [
        ("registries.usage_scan", (str(registry.pk),)) for registry in registries[:2]
    ]


@pytest.mark.parametrize("state", [State.PENDING, State.FAILED, State.DEPROVISIONING])
def test_the_scan_of_a_registry_that_is_not_ready_does_nothing(state: str) -> None:
    registry = RegistryFactory(state=state)

    assert usage_scan_registry.apply((str(registry.pk),)).get() is None  # the task, as queued
    with transaction.atomic():
        assert registry_usage_scan(registry_id=registry.pk) is None

    registry.refresh_from_db()
    assert registry.usage_scanned_at is None


def test_a_scan_has_time_limits_of_its_own_within_the_brokers_visibility_timeout(settings) -> None:
    assert usage_scan_registry.soft_time_limit == settings.REGISTRY_USAGE_SCAN_TIME_LIMIT == 300
    assert usage_scan_registry.time_limit == 330 < settings.CELERY_VISIBILITY_TIMEOUT
