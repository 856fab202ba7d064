"""The reconciler (``registries.reconcile``): each pass compares what should exist with what is
recorded and what the registry answers, and repairs the difference; the lease keeps two passes
from running at once. In-process, against the real registry process where it is asked."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from clusters import services
from clusters.models import AgentEnvironmentVariable, Queue
from registries import conditions, reconciler
from registries.drivers import RegistryUnavailable
from registries.models import (
    REGISTRY_URL_VARIABLE,
    JobCredential,
    Lease,
    Registry,
    RegistryEvent,
    State,
)
from registries.reconciler import (
    RECONCILER_LEASE,
    lease_acquire,
    lease_release,
)
from registries.services import (
    job_credential_create,
    lifecycle,
    registry_create_for_cluster,
    registry_deprovision,
    registry_provision,
)
from tests.clusters.factories import ClusterFactory
from tests.support.processes import closed_url

pytestmark = pytest.mark.django_db

PROVISION = "registries.provision"


def new_registry(state: str = State.PENDING, **fields) -> Registry:
    cluster = ClusterFactory(organization__slug="acme")
    registry = registry_create_for_cluster(cluster=cluster)
    if fields or state != State.PENDING:
        Registry.objects.filter(pk=registry.pk).update(state=state, **fields)
        registry.refresh_from_db()
    return registry


def ago(seconds: float) -> timezone.datetime:
    return timezone.now() - timedelta(seconds=seconds)


def synced(registry: Registry) -> tuple[str, str]:
    registry.refresh_from_db()
    condition = conditions.condition_get(registry, conditions.SYNCED)
    assert condition is not None
    return condition["status"], condition["reason"]


# --- registries owed an attempt -------------------------------------------------------------


def test_a_new_registry_is_left_to_its_message_for_one_interval(
    reconcile, broker_queue, settings
) -> None:
    registry = new_registry()
    broker_queue.drain()

    assert reconcile().enqueued == []
    assert registry.next_attempt_at is not None
    assert registry.next_attempt_at - registry.created_at == timedelta(
        seconds=settings.REGISTRY_RECONCILE_INTERVAL_SECONDS
    )


def test_a_pending_registry_whose_message_was_lost_is_enqueued_again_once(
    reconcile, broker_queue, settings
) -> None:
    settings.REGISTRY_URL = closed_url()  # nothing answers
    registry = new_registry(next_attempt_at=ago(1))
    broker_queue.drain()  # the message is lost

    assert reconcile().enqueued == [str(registry.pk)]
    assert broker_queue.drain() == [(PROVISION, (str(registry.pk),))]
    assert synced(registry) == ("False", "Stalled")
    # Leased: the next pass leaves it to the message it sent.
    assert reconcile().enqueued == []
    assert broker_queue.drain() == []

    assert registry_provision(registry_id=registry.pk).retry
    # What the attempt found, not the stall, is what Synced says now.
    assert synced(registry) == ("False", "ReconcileError")


def test_a_provisioning_registry_whose_lease_expired_is_provisioned_again(
    reconcile, broker_queue
) -> None:
    registry = new_registry(
        State.PROVISIONING, attempts=1, next_attempt_at=ago(1), attempt_deadline=ago(1)
    )
    held = new_registry(
        State.PROVISIONING, attempts=1, next_attempt_at=ago(-60), attempt_deadline=ago(-60)
    )
    broker_queue.drain()

    assert reconcile().enqueued == [str(registry.pk)]

    registry.refresh_from_db()
    assert registry.state == State.PENDING
    event = registry.events.last()
    assert (event.from_state, event.to_state) == (State.PROVISIONING, State.PENDING)
    assert event.message.startswith("Attempt 1 did not finish by ")
    assert broker_queue.drain() == [(PROVISION, (str(registry.pk),))]
    held.refresh_from_db()
    assert held.state == State.PROVISIONING  # its attempt is still within its lease


def test_a_duplicate_message_leaves_a_running_attempt_alone(registry_settings) -> None:
    registry = new_registry(
        State.PROVISIONING, attempts=1, next_attempt_at=ago(-60), attempt_deadline=ago(-60)
    )

    result = registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert (result.state, registry.state, registry.attempts) == (
        State.PROVISIONING,
        State.PROVISIONING,
        1,
    )
    assert registry.events.count() == 1  # only its creation


def test_an_attempt_that_outlived_its_lease_cannot_record_its_outcome(
    reconcile, registry_settings
) -> None:
    old_deadline = ago(1)
    registry = new_registry(
        State.PROVISIONING, attempts=1, next_attempt_at=old_deadline, attempt_deadline=old_deadline
    )
    reconcile()  # the lease expired: back to pending, enqueued again
    assert registry_provision(registry_id=registry.pk).state == State.READY

    # The first attempt, alive after all, fails late: its outcome is not recorded.
    late = lifecycle.attempt_failed(
        registry.pk,
        RegistryUnavailable("late"),
        working=State.PROVISIONING,
        deadline=old_deadline,
        log_extra={},
    )

    registry.refresh_from_db()
    assert (late.state, registry.state, registry.last_error) == (State.READY, State.READY, "")


def test_a_duplicate_deprovisioning_message_leaves_a_running_sweep_alone() -> None:
    running = ago(-60)
    registry = new_registry(
        State.DEPROVISIONING,
        cluster=None,
        deprovision_requested_at=ago(10),
        attempts=1,
        next_attempt_at=running,
        attempt_deadline=running,
    )

    result = registry_deprovision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert (result.state, registry.attempts, registry.attempt_deadline) == (
        State.DEPROVISIONING,
        1,
        running,
    )
    assert registry.events.count() == 1


def test_one_failing_repair_does_not_stop_the_pass(reconcile, monkeypatch) -> None:
    first, second = (
        new_registry(State.READY, url=f"r.example/acme/{n}", next_attempt_at=None) for n in "ab"
    )
    republish = reconciler.registry_republish

    def fails_for_the_first(*, registry):
        if registry.pk == first.pk:
            raise RuntimeError("boom")
        return republish(registry=registry)

    monkeypatch.setattr(reconciler, "registry_republish", fails_for_the_first)

    assert reconcile().republished == [str(second.pk)]


def test_settled_registries_are_not_enqueued(reconcile, broker_queue) -> None:
    new_registry(State.READY, url="r/x", next_attempt_at=None, state_changed_at=ago(3600))
    new_registry(State.FAILED, next_attempt_at=None, state_changed_at=ago(3600))
    broker_queue.drain()

    assert reconcile().enqueued == []


# --- clusters owed a registry ---------------------------------------------------------------


def test_a_cluster_with_a_hosted_queue_and_no_registry_gets_one(reconcile, broker_queue) -> None:
    cluster = ClusterFactory(organization__slug="acme")
    # Written around the services, so no signal created its registry.
    Queue.objects.create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    self_hosted_only = ClusterFactory(organization__slug="acme")
    Queue.objects.create(cluster=self_hosted_only, key="mine")

    report = reconcile()

    registry = Registry.objects.get(cluster=cluster)
    assert report.created == [str(registry.pk)]
    assert broker_queue.drain() == [(PROVISION, (str(registry.pk),))]
    assert not Registry.objects.filter(cluster=self_hosted_only).exists()
    assert reconcile().created == []


# --- published URLs -------------------------------------------------------------------------


@pytest.mark.parametrize("drift", ["missing", "stale"])
def test_a_ready_registrys_missing_or_stale_url_is_published_again(reconcile, drift) -> None:
    registry = new_registry(State.READY, url="r.example/acme/0a1b", next_attempt_at=None)
    if drift == "stale":
        services.agent_environment_set(
            cluster=registry.cluster,
            name=REGISTRY_URL_VARIABLE,
            value="old.example/acme/0a1b",
            source="registry",
        )

    report = reconcile()

    assert report.republished == [str(registry.pk)]
    variable = AgentEnvironmentVariable.objects.get(cluster=registry.cluster)
    assert (variable.name, variable.value) == (REGISTRY_URL_VARIABLE, "r.example/acme/0a1b")
    registry.refresh_from_db()
    condition = conditions.condition_get(registry, conditions.SYNCED)
    assert (condition["status"], condition["reason"]) == ("True", "ReconcileSuccess")
    assert condition["message"].startswith(f"Re-published {REGISTRY_URL_VARIABLE}: it was {drift}")
    assert reconcile().republished == []


def test_a_url_that_cannot_be_published_is_reported_on_synced(reconcile) -> None:
    registry = new_registry(State.READY, url="r.example/acme/0a1b", next_attempt_at=None)
    AgentEnvironmentVariable.objects.create(
        cluster=registry.cluster, name=REGISTRY_URL_VARIABLE, value="mine", source="user"
    )

    assert reconcile().republished == []

    assert synced(registry) == ("False", "ReconcileError")
    assert AgentEnvironmentVariable.objects.get(cluster=registry.cluster).value == "mine"


# --- failed registries ----------------------------------------------------------------------


def test_a_registry_that_failed_because_the_registry_was_down_is_retried_once_it_answers(
    reconcile, broker_queue, registry_settings, settings
) -> None:
    settings.REGISTRY_FAILED_RETRY_AFTER_SECONDS = 60
    transient = new_registry(State.FAILED, failure_transient=True, state_changed_at=ago(61))
    recent = new_registry(State.FAILED, failure_transient=True, state_changed_at=ago(30))
    misconfigured = new_registry(State.FAILED, failure_transient=False, state_changed_at=ago(61))
    broker_queue.drain()

    assert reconcile().retried == [str(transient.pk)]

    transient.refresh_from_db()
    assert (transient.state, transient.attempts, transient.failure_transient) == (
        State.PENDING,
        0,
        False,
    )
    assert transient.events.last().message.startswith("retried by the reconciler")
    assert broker_queue.drain() == [(PROVISION, (str(transient.pk),))]
    for registry in (recent, misconfigured):
        registry.refresh_from_db()
        assert registry.state == State.FAILED


def test_a_failed_registry_is_not_retried_while_the_registry_is_down(
    reconcile, settings, broker_queue
) -> None:
    settings.REGISTRY_URL = closed_url()
    settings.REGISTRY_FAILED_RETRY_AFTER_SECONDS = 0
    registry = new_registry(State.FAILED, failure_transient=True, state_changed_at=ago(1))
    broker_queue.drain()

    assert reconcile().retried == []
    registry.refresh_from_db()
    assert registry.state == State.FAILED


def test_an_attempt_that_gives_up_on_an_unreachable_registry_marks_the_failure_transient(
    settings,
) -> None:
    settings.REGISTRY_URL = closed_url()
    settings.REGISTRY_PROVISION_MAX_ATTEMPTS = 1
    registry = new_registry()

    result = registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert (result.state, registry.failure_transient) == (State.FAILED, True)
    assert registry.next_attempt_at is None


# --- the lease ------------------------------------------------------------------------------


def test_a_pass_is_skipped_while_another_holds_the_lease(reconcile) -> None:
    assert lease_acquire(RECONCILER_LEASE, holder="beat-1", ttl=timedelta(minutes=1))
    registry = new_registry(next_attempt_at=ago(1))

    report = reconcile(holder="beat-2")

    assert report.skipped_because_held_by == "beat-1"
    assert report.enqueued == []
    lease_release(RECONCILER_LEASE, holder="beat-1")
    assert reconcile(holder="beat-2").enqueued == [str(registry.pk)]
    # A pass lets go of the lease when it ends.
    assert Lease.objects.get(name=RECONCILER_LEASE).expires_at <= timezone.now()


def test_an_expired_lease_is_taken_over() -> None:
    assert lease_acquire("x", holder="dead", ttl=timedelta(seconds=-1))
    assert lease_acquire("x", holder="alive", ttl=timedelta(minutes=1))
    assert not lease_acquire("x", holder="dead", ttl=timedelta(minutes=1))


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_of_many_concurrent_takers_exactly_one_gets_the_lease() -> None:
    takers, results = 16, []
    barrier = threading.Barrier(takers)

    def take(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(lease_acquire("race", holder=f"t{index}", ttl=timedelta(minutes=1)))
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(takers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results) == [False] * (takers - 1) + [True]


# --- conditions -----------------------------------------------------------------------------


def test_a_condition_moves_its_transition_time_only_when_its_status_changes() -> None:
    registry = Registry(state=State.PENDING)
    t0, t1, t2 = (timezone.now() + timedelta(seconds=s) for s in (0, 1, 2))

    assert conditions.condition_set(registry, "Ready", "False", "Pending", "a", now=t0)
    assert conditions.condition_set(registry, "Ready", "False", "Provisioning", "b", now=t1)
    assert conditions.condition_get(registry, "Ready")["last_transition_time"] == t0
    assert not conditions.condition_set(registry, "Ready", "False", "Provisioning", "b", now=t2)
    assert conditions.condition_set(registry, "Ready", "True", "Provisioned", "c", now=t2)
    assert conditions.condition_get(registry, "Ready")["last_transition_time"] == t2
    assert [c["type"] for c in registry.conditions] == ["Ready"]


def test_provisioning_sets_ready_and_synced(registry_settings) -> None:
    registry = new_registry()
    registry.refresh_from_db()
    assert [(c["type"], c["status"], c["reason"]) for c in registry.conditions] == [
        ("Ready", "False", "Pending"),
        ("Synced", "Unknown", "Created"),
    ]

    registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert [(c["type"], c["status"], c["reason"]) for c in registry.conditions] == [
        ("Ready", "True", "Provisioned"),
        ("Synced", "True", "ReconcileSuccess"),
    ]
    ready = conditions.condition_get(registry, "Ready")
    assert ready["last_transition_time"] == registry.state_changed_at
    assert RegistryEvent.objects.filter(registry=registry).count() == 3


# --- housekeeping ---------------------------------------------------------------------------


def test_a_pass_purges_job_credentials_expired_more_than_a_day_ago(reconcile) -> None:
    cluster = ClusterFactory(organization__slug="acme")
    token, _ = services.agent_token_create(cluster=cluster, description="agents")

    def credential(expired_for: timedelta, **fields) -> JobCredential:
        made, _ = job_credential_create(agent_token=token)
        JobCredential.objects.filter(pk=made.pk).update(
            expires_at=timezone.now() - expired_for, **fields
        )
        return made

    old = credential(timedelta(days=1, minutes=1))
    old_and_revoked = credential(timedelta(days=2), revoked_at=ago(3 * 86400))
    recent = credential(timedelta(hours=23))
    live, _ = job_credential_create(agent_token=token)

    report = reconcile()

    assert report.job_credentials_purged == 2
    assert report.repairs == 0
    left = set(JobCredential.objects.values_list("pk", flat=True))
    assert left == {recent.pk, live.pk}
    assert not {old.pk, old_and_revoked.pk} & left
    assert reconcile().job_credentials_purged == 0
