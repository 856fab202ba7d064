"""Concurrent first hosted queues on one cluster give one registry and one provisioning; concurrent
first quota writes give one quota.

Real threads, each with its own PostgreSQL connection, started together on a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from clusters import services
from clusters.audit import AuditEvent
from clusters.models import AgentEnvironmentVariable, Cluster, Queue
from clusters.signals import first_hosted_queue_created
from registries.models import Registry, RegistryEvent, State
from registries.quotas import RegistryQuota
from registries.services import quota_set, registry_create_for_cluster, registry_provision
from tests.api.test_registry_quota_api import use
from tests.clusters.factories import ClusterFactory
from tests.registries.factories import RegistryFactory
from tests.support.processes import wait_until

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]
THREADS = 8


def run_together(work: Callable[[int], object]) -> list[object]:
    barrier = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = work(index)
        except Exception as exc:  # reported below, not swallowed
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    return results


def test_concurrent_first_hosted_queues_give_one_registry_and_one_provisioning(
    broker_queue,
) -> None:
    cluster = ClusterFactory()
    announced: list[str] = []

    def record(sender: object, *, queue: Queue, **kwargs: object) -> None:
        announced.append(queue.key)

    first_hosted_queue_created.connect(record, dispatch_uid="test-record")
    try:
        run_together(
            lambda i: services.queue_create(
                cluster=cluster, key=f"hosted-{i}", instance_shape="LINUX_AMD64_2X4"
            )
        )
    finally:
        first_hosted_queue_created.disconnect(dispatch_uid="test-record")
    assert cluster.queues.count() == THREADS
    # The cluster row lock lets exactly one creator see itself as first.
    assert len(announced) == 1
    registry = Registry.objects.get(cluster=cluster)
    assert RegistryEvent.objects.filter(registry=registry).count() == 1
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]


def test_concurrent_registry_creation_without_the_cluster_lock_is_stopped_by_the_constraint(
    broker_queue,
) -> None:
    cluster = ClusterFactory()
    results = run_together(lambda i: registry_create_for_cluster(cluster=cluster).pk)
    registry = Registry.objects.get(cluster=cluster)
    assert set(results) == {registry.pk}
    assert RegistryEvent.objects.filter(registry=registry).count() == 1
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]


def test_concurrent_creation_of_one_key_gives_one_queue_and_clear_errors() -> None:
    cluster = ClusterFactory()

    def create(i: int) -> object:
        try:
            return services.queue_create(
                cluster=cluster, key="same", instance_shape="LINUX_AMD64_2X4"
            ).pk
        except Exception as exc:
            return str(exc)

    results = run_together(create)
    queue = cluster.queues.get()
    assert results.count(queue.pk) == 1
    assert sorted(set(results) - {queue.pk}) == [
        "{'key': [\"A queue with key 'same' already exists in this cluster.\"]}"
    ]
    assert Registry.objects.filter(cluster=cluster).count() == 1


def test_provisioning_and_deleting_the_cluster_at_once_do_not_deadlock(registry_settings) -> None:
    """``cluster_delete`` locks the cluster, then the registry. Provisioning's last step must take
    them in the same order: writing the agent environment needs the cluster row too."""
    cluster = ClusterFactory(organization__slug="acme")
    registry = RegistryFactory(cluster=cluster)
    holding, errors = threading.Event(), []

    def delete_when_provisioning_waits() -> None:
        try:
            with transaction.atomic():
                Cluster.objects.select_for_update().get(pk=cluster.pk)  # as cluster_delete does
                holding.set()
                # Go on only once provisioning's last step is waiting for a lock we hold.
                wait_until(lambda: backends_waiting_for_a_lock() == 1, timeout=15)
                services.cluster_delete(cluster=cluster)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=delete_when_provisioning_waits)
    thread.start()
    assert holding.wait(timeout=10)
    result = registry_provision(registry_id=registry.pk)
    thread.join(timeout=30)

    assert errors == []
    assert result.state == State.DEPROVISIONING  # it found the registry on its way out
    registry.refresh_from_db()
    assert (registry.state, registry.cluster_id) == (State.DEPROVISIONING, None)
    assert not AgentEnvironmentVariable.objects.filter(cluster_id=cluster.pk).exists()


@pytest.mark.parametrize("override", [False, True], ids=["default", "override"])
def test_two_first_writes_of_one_quota_give_one_row_the_second_an_update(override: bool) -> None:
    """Neither write finds a row to lock: the second's insert waits on the first's, and once the
    first commits it is retried as an update of the row the first wrote (no 500)."""
    registry = RegistryFactory(state=State.READY)
    use(registry, 1500)
    organization = registry.cluster.organization
    target = {"organization": organization, "cluster": registry.cluster if override else None}
    holding, errors = threading.Event(), []

    def first_write() -> None:
        try:
            with transaction.atomic():
                quota_set(**target, hard_bytes=1000)
                holding.set()
                # Commit only once the second write waits on the row this one inserted.
                wait_until(lambda: backends_waiting_for_a_lock() == 1, timeout=15)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=first_write)
    thread.start()
    assert holding.wait(timeout=10)
    quota = quota_set(**target, hard_bytes=2000)
    thread.join(timeout=30)

    assert errors == []
    assert list(RegistryQuota.objects.values_list("pk", "cluster", "hard_bytes")) == [
        (quota.pk, registry.cluster.pk if override else None, 2000)
    ]
    assert list(
        AuditEvent.objects.filter(type__endswith="QUOTA_UPDATED")
        .order_by("occurred_at")
        .values_list("data__hard_bytes", flat=True)
    ) == [[None, 1000], [1000, 2000]]
    registry.refresh_from_db()
    assert registry.push_refused == ""  # judged last against the quota in force: 1500 of 2000


def backends_waiting_for_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def test_events_of_a_registry_another_worker_holds_are_left_to_it() -> None:
    """A worker applying a registry's events holds its row; a second one leaves them to it at
    once instead of waiting (a burst of events keeps one worker busy, not one per message)."""
    from registries.inventory import RegistryNotification
    from registries.locks import registry_lock
    from registries.services import notifications_apply, notifications_apply_unless_busy
    from tests.registries.test_notifications import push, receive

    registry = RegistryFactory(state=State.READY)
    receive(push("e1", f"{registry.namespace}/base"))
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                registry_lock(registry.pk)
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        assert notifications_apply_unless_busy(registry_id=registry.pk) is None
        assert RegistryNotification.objects.get().applied_at is None
    finally:
        release.set()
        thread.join(10)
    assert notifications_apply_unless_busy(registry_id=registry.pk) == 1
    assert notifications_apply(registry_id=registry.pk) == 0
