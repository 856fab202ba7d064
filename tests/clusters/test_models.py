"""The invariants hold in the database itself, not only in Python validation."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from clusters.models import AgentEnvironmentVariable, Organization, Queue
from tests.clusters.factories import ClusterFactory, QueueFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "fields",
    [
        {"key": "bad key"},
        {"key": ""},
        {"key": "ok", "instance_shape": "LINUX_AMD64_3X5"},
    ],
)
def test_the_database_refuses_an_invalid_queue(fields: dict[str, str]) -> None:
    cluster = ClusterFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Queue.objects.bulk_create([Queue(cluster=cluster, **fields)])
    assert Queue.objects.count() == 0


def test_the_database_refuses_a_duplicate_queue_key_in_a_cluster() -> None:
    queue = QueueFactory(key="default")
    with pytest.raises(IntegrityError), transaction.atomic():
        Queue.objects.bulk_create([Queue(cluster=queue.cluster, key="default")])
    assert Queue.objects.count() == 1


def test_the_database_refuses_a_bad_organization_slug_and_environment_name() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.bulk_create([Organization(slug="Not_A_Slug", name="x")])
    with pytest.raises(IntegrityError), transaction.atomic():
        AgentEnvironmentVariable.objects.bulk_create(
            [AgentEnvironmentVariable(cluster=ClusterFactory(), name="lower", value="", source="t")]
        )
