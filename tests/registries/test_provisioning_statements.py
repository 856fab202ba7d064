"""The statements of the provisioning path, pinned (issue 15, P4b): creating a cluster and its
first hosted queue, and provisioning its registry in one transaction (the driver checked the
registry moments ago) or in two (it must ask the registry first).

Counted as the benchmark counts them: every statement the application sends, transaction control
(``BEGIN``, ``COMMIT``, savepoints) included, on PostgreSQL, outside any test transaction. Each
statement is pinned as its verb and table, so a change shows which statement came or went.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clusters import services
from clusters.models import Cluster, Organization
from registries.backends import backends_all
from registries.models import Registry, State
from registries.services import registry_provision

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

_TABLE = re.compile(r'^(?:INSERT INTO|UPDATE|DELETE FROM|SELECT .*? FROM) "(\w+)"', re.DOTALL)


def shape(sql: str) -> str:
    """``INSERT registries_registry``, ``SELECT clusters_cluster FOR UPDATE``, ``BEGIN``..."""
    verb = sql.split(" ", 1)[0]
    table = _TABLE.match(sql)
    if table is None:
        return verb
    return " ".join([verb, table[1], *(["FOR UPDATE"] if sql.endswith("FOR UPDATE") else [])])


def statements(work: Callable[[], Any]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        work()
    return [shape(query["sql"]) for query in captured.captured_queries]


CREATE = [
    "BEGIN",  # the cluster and its audit row (issue 17): one transaction
    "INSERT clusters_cluster",
    "INSERT clusters_auditevent",
    "COMMIT",
    "BEGIN",
    "SELECT clusters_cluster FOR UPDATE",
    "SELECT clusters_queue",  # is a hosted queue there already?
    "INSERT clusters_queue",
    "INSERT clusters_auditevent",  # the queue's audit row (the organization: the locked row's)
    "INSERT registries_registry",  # ON CONFLICT DO NOTHING RETURNING: did it go in?
    "INSERT registries_registryevent",
    "COMMIT",
]

ATTEMPT_STARTS = [
    "BEGIN",
    "SELECT clusters_cluster FOR UPDATE",  # found by the registry's id: nothing read before
    "SELECT registries_registry FOR UPDATE",
    "INSERT registries_registryevent",
    "UPDATE registries_registry",
    "COMMIT",
]

ATTEMPT_ENDS = [
    "BEGIN",
    "SELECT clusters_cluster FOR UPDATE",
    "SELECT registries_registry FOR UPDATE",
    "INSERT registries_registryevent",  # both events of the attempt, when it is one transaction
    "UPDATE registries_registry",
    "INSERT clusters_agentenvironmentvariable",  # ON CONFLICT DO UPDATE ... RETURNING: locked
    "COMMIT",
]


def create_cluster_with_hosted_queue(organization: Organization, name: str) -> Cluster:
    cluster = services.cluster_create(organization=organization, name=name)
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    return cluster


def test_creating_a_cluster_and_its_first_hosted_queue_takes_twelve_statements(
    broker_queue,
) -> None:
    organization = services.organization_create(slug="acme", name="Acme")

    created = statements(lambda: create_cluster_with_hosted_queue(organization, "linux"))

    assert created == CREATE
    assert Registry.objects.get().state == State.PENDING


def test_provisioning_takes_one_transaction_once_the_registry_was_checked(
    registry_settings, broker_queue
) -> None:
    # Long enough that the second attempt finds the first one's check, however slow the run.
    registry_settings.REGISTRY_CHECK_CACHE_SECONDS = 3600
    organization = services.organization_create(slug="acme", name="Acme")
    first, second = (
        Registry.objects.get(cluster=create_cluster_with_hosted_queue(organization, name))
        for name in ("first", "second")
    )
    backends_all()  # the process's copy of the backends, read at most every few seconds

    checked = statements(lambda: registry_provision(registry_id=first.pk))
    at_once = statements(lambda: registry_provision(registry_id=second.pk))

    # The first asks the registry between its two transactions; the second does not ask.
    assert checked == ATTEMPT_STARTS + ATTEMPT_ENDS
    assert at_once == ATTEMPT_ENDS
    assert len(at_once) == 7
    for registry in (first, second):
        registry.refresh_from_db()
        assert registry.state == State.READY
        assert list(registry.events.values_list("from_state", "to_state", "attempt")) == [
            ("", State.PENDING, 0),
            (State.PENDING, State.PROVISIONING, 1),
            (State.PROVISIONING, State.READY, 1),
        ]
