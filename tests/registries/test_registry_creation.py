"""Creating a cluster's registry (``registry_create_for_cluster``): one ``INSERT ... ON CONFLICT
DO NOTHING RETURNING`` its id and, only if nothing went in, a read of whose registry it is, so
that a registry the cluster has already and a namespace that is taken are handled without an
error in the creating transaction."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import IntegrityError

from clusters import services
from clusters.models import Queue
from registries.models import Registry, RegistryEvent, State
from registries.services import lifecycle
from tests.clusters.factories import ClusterFactory
from tests.registries.factories import RegistryFactory

pytestmark = pytest.mark.django_db(transaction=True)
PROVISION = "registries.provision"


@pytest.fixture
def draws(monkeypatch) -> list[str]:
    """The namespaces' random parts, drawn in this order (the test fills the list)."""
    drawn: list[str] = []
    monkeypatch.setattr(lifecycle, "secrets", SimpleNamespace(token_hex=lambda n: drawn.pop(0)))
    return drawn


def test_a_cluster_keeps_the_registry_it_has_when_a_hosted_queue_is_first_again(
    broker_queue,
) -> None:
    cluster = ClusterFactory(organization__slug="acme")
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    registry = Registry.objects.get()
    services.queue_delete(queue=queue)
    broker_queue.drain()

    services.queue_create(cluster=cluster, key="linux-2", instance_shape="LINUX_AMD64_2X4")

    assert list(Registry.objects.values_list("pk", "state")) == [(registry.pk, State.PENDING)]
    assert RegistryEvent.objects.count() == 1
    assert broker_queue.drain() == []


def test_a_namespace_that_is_taken_is_drawn_again(broker_queue, draws) -> None:
    RegistryFactory(namespace="acme/000000000000")
    broker_queue.drain()
    draws.extend(["000000000000", "111111111111"])
    cluster = ClusterFactory(organization__slug="acme")

    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")

    registry = Registry.objects.get(cluster=cluster)
    assert registry.namespace == "acme/111111111111"
    assert list(registry.events.values_list("to_state", "message")) == [(State.PENDING, "created")]
    assert broker_queue.drain() == [(PROVISION, (str(registry.pk),))]


def test_three_namespaces_taken_refuse_the_creation_and_leave_nothing(broker_queue, draws) -> None:
    RegistryFactory(namespace="acme/000000000000")
    broker_queue.drain()
    draws.extend(["000000000000"] * 3)
    cluster = ClusterFactory(organization__slug="acme")

    with pytest.raises(IntegrityError):
        services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")

    assert not Queue.objects.filter(cluster=cluster).exists()
    assert not Registry.objects.filter(cluster=cluster).exists()
    assert broker_queue.drain() == []
