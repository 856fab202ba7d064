"""Concurrent first hosted queues on one cluster give one registry and one provisioning.

Real threads, each with its own PostgreSQL connection, started together on a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from clusters import services
from clusters.models import Queue
from clusters.signals import first_hosted_queue_created
from registries.models import Registry, RegistryEvent
from registries.services import registry_create_for_cluster
from tests.clusters.factories import ClusterFactory

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
