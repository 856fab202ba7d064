"""The lock order (``clusters.locks.LOCK_ORDER``): organization -> cluster -> queue -> registry ->
agent environment variable, in every transaction that takes more than one row lock.

Each test runs one path that takes several locks, captures its SQL and reads, transaction by
transaction, which tables it locked (``SELECT ... FOR UPDATE``, or an upsert) in which order.
Two paths that lock the same rows in different orders can deadlock (provisioning that locked the
registry before the cluster did, against a cluster deletion:
``tests/registries/test_concurrency.py``).
PostgreSQL only: SQLite has no ``FOR UPDATE``.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clusters import services
from clusters.locks import LOCK_ORDER
from clusters.models import AgentEnvironmentVariable, Organization
from clusters.webhooks import Verified, webhook_delivery_receive, webhook_secret_create
from registries.models import REGISTRY_URL_VARIABLE, Registry, State
from registries.reconciler import registry_republish
from registries.services import registry_provision
from tests.registries.factories import RegistryFactory

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db]

#: The tables of ``LOCK_ORDER``, outermost first.
TABLES = [apps.get_model(label)._meta.db_table for label in LOCK_ORDER]
ORGANIZATION, CLUSTER, QUEUE, REGISTRY, VARIABLE = TABLES
RANK = {table: rank for rank, table in enumerate(TABLES)}
#: A row lock: ``SELECT ... FOR UPDATE``, or an upsert (``INSERT ... ON CONFLICT ... DO UPDATE``
#: locks the row it finds, or the one it inserts). The locked table is the outer query's, the
#: first ``FROM``: a sub-select in its ``WHERE`` (the registry that names the cluster to lock)
#: is read, not locked.
LOCKED_TABLE = re.compile(
    r'^(?:SELECT .*? FROM "(\w+)".* FOR UPDATE|INSERT INTO "(\w+)".* ON CONFLICT .* DO UPDATE)',
    re.DOTALL,
)


def locks_by_transaction(queries: list[dict[str, Any]]) -> list[list[str]]:
    """The tables each transaction locked, in order; transactions without a lock left out.

    The test itself runs in a transaction, so each outermost ``transaction.atomic`` of the code
    under test is a savepoint here: a transaction is what lies between a savepoint taken at the
    top level and its release (Django releases a savepoint after rolling back to it, too).
    """
    transactions: list[list[str]] = []
    depth = 0
    for query in queries:
        sql = query["sql"]
        if sql.startswith("SAVEPOINT "):
            depth += 1
            if depth == 1:
                transactions.append([])
        elif sql.startswith("RELEASE SAVEPOINT "):
            depth -= 1
        elif match := LOCKED_TABLE.match(sql):
            assert depth > 0, f"a lock outside any transaction: {sql}"
            transactions[-1].append(match[1] or match[2])
    return [locked for locked in transactions if locked]


def assert_in_lock_order(transactions: list[list[str]]) -> None:
    for locked in transactions:
        ranks = [RANK[table] for table in locked]
        assert ranks == sorted(ranks), f"locks out of order {LOCK_ORDER}: {locked}"


def run(path: Any) -> list[list[str]]:
    with CaptureQueriesContext(connection) as captured:
        path()
    transactions = locks_by_transaction(captured.captured_queries)
    assert_in_lock_order(transactions)
    return transactions


@pytest.fixture
def organization() -> Organization:
    return services.organization_create(slug="acme", name="Acme")


def test_deleting_a_cluster_locks_the_cluster_then_its_registry(organization) -> None:
    cluster = services.cluster_create(organization=organization, name="linux")
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")

    assert run(lambda: services.cluster_delete(cluster=cluster)) == [[CLUSTER, REGISTRY]]
    assert Registry.objects.get().state == State.DEPROVISIONING


@pytest.fixture
def pending_registry(organization) -> Registry:
    """The registry of a new cluster's first hosted queue, not provisioned yet."""
    cluster = services.cluster_create(organization=organization, name="linux")
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    return Registry.objects.get()


def test_provisioning_locks_the_cluster_then_the_registry_then_the_variable(
    pending_registry, monkeypatch
) -> None:
    registry = pending_registry
    # The registry backend is outside the database: a driver that answers at once.
    driver = SimpleNamespace(provision=lambda namespace: f"registry.example/{namespace}")
    monkeypatch.setattr(
        "registries.services.provisioning.get_driver", lambda name, backend=None: driver
    )

    locks = run(lambda: registry_provision(registry_id=registry.pk))

    # The attempt starts under its cluster's lock and the registry's (the cluster found by the
    # registry's id); its last step publishes the URL.
    assert locks == [[CLUSTER, REGISTRY], [CLUSTER, REGISTRY, VARIABLE]]
    registry.refresh_from_db()
    assert registry.state == State.READY


def test_provisioning_at_once_locks_the_cluster_then_the_registry_then_the_variable(
    pending_registry, monkeypatch
) -> None:
    registry = pending_registry

    class Checked:
        """A driver that checked the registry moments ago: the attempt is one transaction."""

        def provision_cached(self, *, namespace: str) -> str:
            return f"registry.example/{namespace}"

    monkeypatch.setattr(
        "registries.services.provisioning.get_driver", lambda name, backend=None: Checked()
    )

    locks = run(lambda: registry_provision(registry_id=registry.pk))

    assert locks == [[CLUSTER, REGISTRY, VARIABLE]]
    registry.refresh_from_db()
    assert registry.state == State.READY


def test_republishing_locks_the_cluster_then_the_registry_then_the_variable() -> None:
    registry = RegistryFactory(state=State.READY)  # its URL was never published

    assert run(lambda: registry_republish(registry=registry)) == [[CLUSTER, REGISTRY, VARIABLE]]
    assert AgentEnvironmentVariable.objects.get(name=REGISTRY_URL_VARIABLE).value == registry.url


def webhook(organization: Organization, event: str, delivery_id: str) -> None:
    secret, _ = webhook_secret_create(organization=organization, description=delivery_id)
    data = {
        "event": event,
        "organization": {"slug": organization.slug},
        "cluster": {"id": "3d2e6f4c-6b1e-4f57-9a53-0f1d0b6c2a11", "name": "Open Source"},
        "queue": {
            "id": "9b8f7a2e-51c4-4d0a-8e3b-6f2a1c4d5e77",
            "key": "linux",
            "hosted": True,
            "hosted_agents": {"instance_shape": {"name": "LINUX_AMD64_2X4"}},
        },
    }
    webhook_delivery_receive(
        organization=organization,
        delivery_id=delivery_id,
        payload=data,
        body=delivery_id.encode(),
        data=data,
        verified=Verified(secret=secret, method="token"),
    )


def test_a_webhook_locks_the_organization_then_the_cluster_then_the_registry(
    organization,
) -> None:
    created = run(lambda: webhook(organization, "cluster_queue.created", "delivery-1"))
    deleted = run(lambda: webhook(organization, "cluster.deleted", "delivery-2"))

    # Each webhook secret is created under the organization's lock, in its own transaction.
    assert created == [[ORGANIZATION], [ORGANIZATION, CLUSTER]]
    assert deleted == [[ORGANIZATION], [ORGANIZATION, CLUSTER, REGISTRY]]
    assert Registry.objects.get().state == State.DEPROVISIONING


def test_the_order_is_checked() -> None:
    with pytest.raises(AssertionError, match="locks out of order"):
        assert_in_lock_order([[CLUSTER, REGISTRY], [REGISTRY, CLUSTER]])
