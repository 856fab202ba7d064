"""The event path: the first hosted queue of a cluster owes it a registry, enqueued after commit.

These tests commit for real (``transaction=True``) and read the real broker, so "enqueued" means a
message was published, and "after commit" means after the database commit.
"""

from __future__ import annotations

import re

import pytest
from django.db import transaction

from clusters import services
from registries.models import Registry, RegistryEvent, State
from tests.clusters.factories import ClusterFactory

pytestmark = pytest.mark.django_db(transaction=True)
PROVISION = "registries.provision"


def test_the_first_hosted_queue_creates_a_pending_registry_and_enqueues_once_after_commit(
    broker_queue,
) -> None:
    cluster = ClusterFactory(organization__slug="acme")
    with transaction.atomic():
        services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
        registry = Registry.objects.get(cluster=cluster)
        assert broker_queue.drain() == []  # nothing leaves before the commit

    assert broker_queue.drain() == [(PROVISION, (str(registry.pk),))]
    assert registry.state == State.PENDING
    assert re.fullmatch(r"acme/[0-9a-f]{12}", registry.namespace)
    assert registry.driver == "distribution"
    assert registry.url == ""
    assert list(RegistryEvent.objects.values_list("from_state", "to_state", "message")) == [
        ("", State.PENDING, "created")
    ]


def test_a_second_hosted_queue_enqueues_nothing(broker_queue) -> None:
    cluster = ClusterFactory()
    services.queue_create(cluster=cluster, key="small", instance_shape="LINUX_AMD64_2X4")
    assert len(broker_queue.drain()) == 1
    services.queue_create(cluster=cluster, key="mac", instance_shape="MACOS_ARM64_M4_6X28")
    assert broker_queue.drain() == []
    assert Registry.objects.filter(cluster=cluster).count() == 1


def test_a_self_hosted_queue_enqueues_nothing(broker_queue) -> None:
    cluster = ClusterFactory()
    services.queue_create(cluster=cluster, key="default")
    assert broker_queue.drain() == []
    assert Registry.objects.count() == 0


def test_a_hosted_queue_after_self_hosted_ones_is_still_the_first_hosted(broker_queue) -> None:
    cluster = ClusterFactory()
    services.queue_create(cluster=cluster, key="default")
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_ARM64_2X4")
    registry = Registry.objects.get(cluster=cluster)
    assert broker_queue.drain() == [(PROVISION, (str(registry.pk),))]


def test_a_rolled_back_transaction_enqueues_nothing_and_leaves_no_rows(broker_queue) -> None:
    cluster = ClusterFactory()

    class Abort(Exception):
        pass

    def create_then_fail() -> None:
        with transaction.atomic():
            services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
            raise Abort

    with pytest.raises(Abort):
        create_then_fail()

    assert broker_queue.drain() == []
    assert cluster.queues.count() == 0
    assert Registry.objects.count() == 0
    assert RegistryEvent.objects.count() == 0


def test_each_cluster_gets_its_own_registry_and_namespace(broker_queue) -> None:
    first, second = ClusterFactory(), ClusterFactory()
    for cluster in (first, second):
        services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    registries = {r.cluster_id: r for r in Registry.objects.all()}
    assert set(registries) == {first.pk, second.pk}
    assert registries[first.pk].namespace != registries[second.pk].namespace
    assert sorted(args for _, args in broker_queue.drain()) == sorted(
        (str(r.pk),) for r in registries.values()
    )
