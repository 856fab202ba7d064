"""Canary rounds scale with backends, not registries: each round claims at most
``REGISTRY_CANARY_SAMPLE`` ready registries whose namespace is due (longest due first) and moves
them a period on, runs one canary per backend, and sends the canaries to a queue of their own.
A backend's canary records its failure on every ready registry of the backend, and restores what
it recorded. Against the session's real registry (and a closed port for a backend that is down)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from controlplane.celery import app
from registries import conditions
from registries.models import Registry, State
from registries.services import (
    BACKEND_CANARY_NAMESPACE,
    backend_canary,
    registries_canary_claim,
    registry_canary,
    registry_create_for_cluster,
)
from registries.tasks import canary_registry, run_canaries
from tests.clusters.factories import ClusterFactory
from tests.registries.factories import RegistryFactory
from tests.support.processes import closed_url

pytestmark = pytest.mark.django_db

BACKEND = "default"  # the registry backend the settings name


def ready_registries(count: int, *, due: datetime) -> list[Registry]:
    """``count`` ready registries, due one minute apart from ``due`` on (the first longest)."""
    return [
        RegistryFactory(state=State.READY, canary_due_at=due + timedelta(minutes=n))
        for n in range(count)
    ]


def ids(registries: list[Registry]) -> list[str]:
    return [str(registry.pk) for registry in registries]


def ready_condition(registry: Registry) -> tuple[str, str]:
    registry.refresh_from_db()
    condition = conditions.condition_get(registry, conditions.READY)
    assert condition is not None
    return condition["status"], condition["reason"]


# --- the sample -----------------------------------------------------------------------------


def test_a_round_claims_at_most_the_sample_longest_due_first(settings) -> None:
    settings.REGISTRY_CANARY_SAMPLE = 2
    settings.REGISTRY_CANARY_PERIOD_SECONDS = 600
    now = timezone.now()
    registries = ready_registries(4, due=now - timedelta(hours=1))
    RegistryFactory(state=State.PENDING, canary_due_at=now - timedelta(days=1))
    RegistryFactory(state=State.FAILED, canary_due_at=now - timedelta(days=1))
    later = RegistryFactory(state=State.READY, canary_due_at=now + timedelta(seconds=1))

    claimed = registries_canary_claim(now=now)

    assert [str(pk) for pk in claimed] == ids(registries[:2])
    for registry in registries[:2]:
        registry.refresh_from_db()
        assert registry.canary_due_at == now + timedelta(seconds=600)
    for registry in [*registries[2:], later]:
        due = registry.canary_due_at
        registry.refresh_from_db()
        assert registry.canary_due_at == due  # not their turn: untouched


def test_every_ready_registry_is_checked_once_within_a_period(settings) -> None:
    settings.REGISTRY_CANARY_SAMPLE = 2
    settings.REGISTRY_CANARY_PERIOD_SECONDS = 3600
    start = timezone.now()
    registries = ready_registries(5, due=start - timedelta(hours=2))
    interval = timedelta(minutes=1)

    rounds = [
        [str(pk) for pk in registries_canary_claim(now=start + n * interval)] for n in range(5)
    ]

    # ceil(5 / 2) rounds check every one, each once; then nobody is due until a period passed.
    assert rounds == [ids(registries[0:2]), ids(registries[2:4]), ids(registries[4:5]), [], []]
    again = registries_canary_claim(now=start + timedelta(seconds=3600))
    # The first round's come round first (due at the same time: in either order).
    assert {str(pk) for pk in again} == set(ids(registries[0:2]))


def test_a_new_registry_is_due_at_once() -> None:
    registry = registry_create_for_cluster(cluster=ClusterFactory(organization__slug="acme"))
    assert registry.canary_due_at <= timezone.now()
    Registry.objects.filter(pk=registry.pk).update(state=State.READY, url="r.example/acme/x")

    assert registries_canary_claim() == [registry.pk]


def test_a_sample_of_zero_runs_only_the_backend_canaries(settings, registry_settings) -> None:
    settings.REGISTRY_CANARY_SAMPLE = 0
    ready_registries(2, due=timezone.now() - timedelta(hours=1))

    assert run_canaries.apply().get() == []


# --- a round: the queue, one canary per backend ----------------------------------------------


def test_a_round_enqueues_its_sample_on_the_canaries_queue_and_runs_one_backend_canary(
    settings, registry_settings, broker_queue, caplog
) -> None:
    settings.REGISTRY_CANARY_SAMPLE = 2
    registries = ready_registries(3, due=timezone.now() - timedelta(hours=1))
    broker_queue.drain()

    with caplog.at_level(logging.INFO, logger="registries.services"):
        assert run_canaries.apply().get() == ids(registries[:2])

    assert broker_queue.drain("celery") == []
    assert broker_queue.drain("canaries") == [
        ("registries.canary", (str(registry.pk),)) for registry in registries[:2]
    ]
    backend_canaries = [
        record for record in caplog.records if record.msg.startswith("registry.backend_canary.")
    ]
    assert [(r.msg, r.backend, r.registries_recorded) for r in backend_canaries] == [
        ("registry.backend_canary.passed", BACKEND, 0)
    ]


def test_canary_tasks_go_to_the_canaries_queue_and_provisioning_to_the_default_queue(
    broker_queue, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        registry = registry_create_for_cluster(cluster=ClusterFactory(organization__slug="acme"))
    canary_registry.apply_async((str(registry.pk),))
    app.send_task("registries.canaries")  # as beat sends a round

    assert broker_queue.drain("celery") == [("registries.provision", (str(registry.pk),))]
    # Which queue each goes to, not their order: the filesystem transport orders two messages
    # sent within one millisecond by their random ids.
    assert sorted(broker_queue.drain("canaries")) == [
        ("registries.canaries", ()),
        ("registries.canary", (str(registry.pk),)),
    ]


# --- the backend's canary --------------------------------------------------------------------


def test_a_backend_canary_checks_its_own_namespace_and_leaves_nothing_behind(
    registry_settings,
) -> None:
    checked = backend_canary(backend=BACKEND)

    assert checked.result.ok, checked.result.seen
    assert checked.result.seen.endswith(f"in {BACKEND_CANARY_NAMESPACE}/controlplane-canary")
    assert (checked.recorded, checked.rechecked) == (0, 0)


def test_a_failing_backend_canary_fails_every_ready_registry_and_restores_what_it_failed(
    settings, registry_settings
) -> None:
    working, new = ready_registries(2, due=timezone.now() + timedelta(hours=1))
    pending = RegistryFactory(state=State.PENDING)
    registry_url = settings.REGISTRY_URL
    settings.REGISTRY_URL = closed_url()  # the registry is down
    own = RegistryFactory(state=State.READY, canary_due_at=timezone.now() + timedelta(hours=1))
    assert registry_canary(registry_id=own.pk).ok is False  # its own namespace's canary failed
    own.refresh_from_db()
    own_failure = own.canary_at

    down = backend_canary(backend=BACKEND)

    assert not down.result.ok
    assert (down.recorded, down.rechecked) == (2, 0)
    for registry in (working, new):
        assert ready_condition(registry) == ("False", "CanaryFailed")
        assert (registry.canary_ok, registry.canary_by_backend) == (False, True)
        assert registry.canary_message == down.result.seen
        assert registry.state == State.READY  # it reports, no more
    own.refresh_from_db()
    assert (own.canary_at, own.canary_by_backend) == (own_failure, False)  # its own, kept
    pending.refresh_from_db()
    assert pending.canary_at is None
    # Still down: nothing left to record.
    assert backend_canary(backend=BACKEND).recorded == 0

    settings.REGISTRY_URL = registry_url
    up = backend_canary(backend=BACKEND)

    assert up.result.ok
    assert (up.recorded, up.rechecked) == (2, 1)
    for registry in (working, new):
        assert ready_condition(registry) == ("True", "CanaryPassed")
        assert registry.canary_ok is True
    # Its own failure stays until its own canary passes, which is due now.
    assert ready_condition(own) == ("False", "CanaryFailed")
    assert own.canary_due_at <= timezone.now()
    assert registries_canary_claim() == [own.pk]
    assert registry_canary(registry_id=own.pk).ok
    assert ready_condition(own) == ("True", "CanaryPassed")
    assert (backend_canary(backend=BACKEND).recorded, own.canary_by_backend) == (0, False)


def test_a_registry_whose_own_canary_saw_the_outage_is_checked_in_the_round_the_backend_passes(
    settings, registry_settings, broker_queue
) -> None:
    registry = RegistryFactory(state=State.READY, canary_due_at=timezone.now() + timedelta(hours=1))
    registry_url = settings.REGISTRY_URL
    settings.REGISTRY_URL = closed_url()
    assert registry_canary(registry_id=registry.pk).ok is False  # before any backend canary
    settings.REGISTRY_URL = registry_url
    broker_queue.drain()

    assert run_canaries.apply().get() == [str(registry.pk)]  # not its turn, but failing

    assert broker_queue.drain() == [("registries.canary", (str(registry.pk),))]
    assert canary_registry.apply((str(registry.pk),)).get() is True
    assert ready_condition(registry) == ("True", "CanaryPassed")
    assert run_canaries.apply().get() == []  # passing: back to its turn in the period
