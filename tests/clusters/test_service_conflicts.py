"""Creations whose uniqueness the database checks (``insert_or_explain``, ``conflict_error``):
nothing is read before the insert, and a conflict is explained after it, with the message the
field's own check gave before: a name or key taken, or an id taken (a creation never overwrites a
row). Outside a transaction, and inside one, which survives the refusal."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from clusters import services
from clusters.models import Cluster, Queue
from tests.clusters.factories import ClusterFactory, OrganizationFactory, QueueFactory

pytestmark = pytest.mark.django_db(transaction=True)

ID_TAKEN = {"id": ["A cluster with this id already exists."]}
NAME_TAKEN = {"name": ["A cluster named 'linux' already exists in this organization."]}
QUEUE_ID_TAKEN = {"id": ["A queue with this id already exists."]}
KEY_TAKEN = {"key": ["A queue with key 'linux' already exists in this cluster."]}


def refused(create, *, in_transaction: bool) -> dict[str, list[str]]:
    """The refusal's messages; inside a transaction, which must still answer afterwards."""
    if not in_transaction:
        with pytest.raises(ValidationError) as excinfo:
            create()
        return excinfo.value.message_dict
    with transaction.atomic():
        with pytest.raises(ValidationError) as excinfo:
            create()
        assert Cluster.objects.exists()  # the caller's transaction goes on
    return excinfo.value.message_dict


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_cluster_id_taken_is_an_error_on_id(in_transaction) -> None:
    existing = ClusterFactory(name="other")

    messages = refused(
        lambda: services.cluster_create(
            organization=existing.organization, name="linux", cluster_id=existing.pk
        ),
        in_transaction=in_transaction,
    )

    assert messages == ID_TAKEN
    assert list(Cluster.objects.values_list("name", flat=True)) == ["other"]


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_name_taken_comes_before_an_id_taken(in_transaction) -> None:
    organization = OrganizationFactory()
    existing = ClusterFactory(organization=organization, name="other")
    ClusterFactory(organization=organization, name="linux")

    messages = refused(
        lambda: services.cluster_create(
            organization=organization, name="linux", cluster_id=existing.pk
        ),
        in_transaction=in_transaction,
    )

    assert messages == NAME_TAKEN


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_queue_id_taken_is_an_error_on_id(in_transaction) -> None:
    existing = QueueFactory(key="other")
    cluster = ClusterFactory()

    messages = refused(
        lambda: services.queue_create(
            cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4", queue_id=existing.pk
        ),
        in_transaction=in_transaction,
    )

    assert messages == QUEUE_ID_TAKEN
    assert not cluster.queues.exists()


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_key_taken_comes_before_an_id_taken(in_transaction) -> None:
    existing = QueueFactory(key="other")
    cluster = ClusterFactory()
    services.queue_create(cluster=cluster, key="linux")

    messages = refused(
        lambda: services.queue_create(cluster=cluster, key="linux", queue_id=existing.pk),
        in_transaction=in_transaction,
    )

    assert messages == KEY_TAKEN
    assert Queue.objects.count() == 2


def test_a_new_id_is_no_conflict() -> None:
    cluster_id, queue_id = uuid.uuid4(), uuid.uuid4()
    cluster = services.cluster_create(
        organization=OrganizationFactory(), name="linux", cluster_id=cluster_id
    )
    queue = services.queue_create(cluster=cluster, key="linux", queue_id=queue_id)
    assert (cluster.pk, queue.pk, queue.cluster_id) == (cluster_id, queue_id, cluster_id)
