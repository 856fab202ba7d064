"""``controlplane.compiled.CompiledSelect``: a query the ORM compiled once, run again with other
values, gives what the ORM gives; a query that does not fit is run by the ORM every time; a lock
refuses to run outside a transaction, as the ORM's does. And the row locks built on it lock
their one row (not the organization the model's ordering joined)."""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError, OperationalError, connection, connections, transaction
from django.db.models.signals import post_init, post_save, pre_save
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from clusters import locks
from controlplane import compiled as compiled_module
from controlplane.compiled import (
    CompiledSelect,
    insert_row_ignoring_conflicts,
    insert_rows,
    save_fields,
)
from registries import locks as registry_locks
from registries.locks import registry_lock, registry_lock_with_its_cluster
from registries.models import Registry, RegistryEvent
from tests.clusters.factories import ClusterFactory
from tests.registries.factories import RegistryFactory

pytestmark = pytest.mark.django_db

FIELDS = [f.attname for f in Registry._meta.concrete_fields]


def as_orm(registry: Registry) -> dict[str, object]:
    return {name: getattr(registry, name) for name in FIELDS}


def test_a_compiled_select_answers_what_the_orm_answers_with_each_value() -> None:
    first, second = RegistryFactory(), RegistryFactory()
    Registry.objects.filter(pk=first.pk).update(conditions=[{"type": "Ready", "status": "False"}])
    select = CompiledSelect(Registry, lambda pk: Registry.objects.filter(pk=pk), "id")

    found = [select(first.pk), select(second.pk), select(str(first.pk))]

    assert "default" in select._compiled
    assert select._compiled["default"] is not None
    for (registry,), expected in zip(found, [first, second, first], strict=True):
        assert as_orm(registry) == as_orm(Registry.objects.get(pk=expected.pk))
        assert registry._state.db == "default"
        assert not registry._state.adding
    # The JSON conditions went through the field's converter, as the ORM's do.
    assert found[0][0].conditions == [{"type": "Ready", "status": "False"}]


def test_the_second_run_sends_only_the_sql() -> None:
    registry = RegistryFactory()
    select = CompiledSelect(
        Registry, lambda pk: Registry.objects.filter(pk=pk).only("namespace"), "id"
    )
    select(registry.pk)

    with CaptureQueriesContext(connection) as captured:
        (found,) = select(registry.pk)

    assert len(captured) == 1
    assert found.namespace == registry.namespace
    assert found.get_deferred_fields() >= {"state", "conditions"}


def test_a_missing_row_is_no_row() -> None:
    registry = RegistryFactory()
    select = CompiledSelect(Registry, lambda pk: Registry.objects.filter(pk=pk), "id")
    select(registry.pk)
    registry.delete()

    assert select(registry.pk) == []


def test_a_query_that_does_not_fit_is_run_by_the_orm_each_time() -> None:
    registry = RegistryFactory()
    # Its parameters are not the values given: not kept.
    select = CompiledSelect(
        Registry, lambda pk: Registry.objects.filter(pk=pk, attempts__gte=0), "id"
    )

    assert [r.pk for r in select(registry.pk)] == [registry.pk]
    assert select._compiled["default"] is None
    assert [r.pk for r in select(registry.pk)] == [registry.pk]


@pytest.mark.django_db(transaction=True)
def test_a_compiled_lock_refuses_to_run_outside_a_transaction() -> None:
    registry = RegistryFactory()
    select = CompiledSelect(
        Registry, lambda pk: Registry.objects.select_for_update().filter(pk=pk), "id"
    )
    with transaction.atomic():
        assert [r.pk for r in select(registry.pk)] == [registry.pk]  # compiled here
    assert select._compiled["default"] is not None
    if not connection.features.has_select_for_update:
        assert [r.pk for r in select(registry.pk)] == [registry.pk]  # as the ORM: no check
        return
    with pytest.raises(TransactionManagementError):
        select(registry.pk)


@pytest.mark.postgresql
def test_row_locks_lock_their_own_row_only() -> None:
    registry = RegistryFactory()

    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        locks.cluster_lock(registry.cluster_id)
        registry_lock(registry.pk)
        locks.agent_environment_variable_upsert(
            cluster=registry.cluster, name="X", value="1", source="test"
        )

    sqls = [q["sql"] for q in captured.captured_queries]
    selects = [sql for sql in sqls if sql.startswith("SELECT")]
    assert len(selects) == 2
    (upsert,) = [sql for sql in sqls if sql.startswith("INSERT")]
    assert " JOIN " not in upsert, upsert
    assert "ON CONFLICT" in upsert, upsert
    for sql in selects:
        assert sql.endswith("FOR UPDATE"), sql
        assert " JOIN " not in sql, sql


def test_save_fields_writes_the_fields_and_signals_as_save_does() -> None:
    registry = RegistryFactory()
    seen: list[tuple[str, object, object]] = []

    def pre(sender: object, instance: Registry, update_fields: object, **kwargs: object) -> None:
        seen.append(("pre", instance.pk, update_fields))

    def post(sender: object, instance: Registry, update_fields: object, **kwargs: object) -> None:
        seen.append(("post", instance.pk, (update_fields, kwargs["created"])))

    pre_save.connect(pre, sender=Registry, weak=False)
    post_save.connect(post, sender=Registry, weak=False)
    try:
        registry.last_error, registry.url = "down", "elsewhere"
        save_fields(registry, ["last_error"])
    finally:
        pre_save.disconnect(pre, sender=Registry)
        post_save.disconnect(post, sender=Registry)

    fields = frozenset(["last_error"])
    assert seen == [("pre", registry.pk, fields), ("post", registry.pk, (fields, False))]
    stored = Registry.objects.get(pk=registry.pk)
    assert stored.last_error == "down"
    assert stored.url != "elsewhere"  # only the fields named


def test_insert_rows_stores_what_bulk_create_stores_and_sets_the_keys() -> None:
    registry = RegistryFactory()

    def events(message: str) -> list[RegistryEvent]:
        return [
            RegistryEvent(registry=registry, from_state="", to_state="pending", message=message),
            RegistryEvent(registry=registry, from_state="pending", to_state="provisioning"),
        ]

    expected, compiled = RegistryEvent.objects.bulk_create(events("orm")), events("compiled")
    assert insert_rows(compiled) is compiled
    with CaptureQueriesContext(connection) as again:
        insert_rows(events("again"))

    columns = ["from_state", "to_state", "attempt", "duration", "registry_id"]
    for made, orm in zip(compiled, expected, strict=True):
        assert made.pk is not None
        assert not made._state.adding
        assert made._state.db == "default"
        stored = RegistryEvent.objects.get(pk=made.pk)
        assert [getattr(stored, name) for name in columns] == [
            getattr(orm, name) for name in columns
        ]
        assert stored.created_at == made.created_at
    assert RegistryEvent.objects.get(pk=compiled[0].pk).message == "compiled"
    assert compiled_module._inserts[(RegistryEvent, 2, "default")] is not None  # kept
    assert [query["sql"].split(" (")[0] for query in again] == [
        'INSERT INTO "registries_registryevent"'
    ]


def test_insert_rows_leaves_rows_that_do_not_fit_to_bulk_create() -> None:
    registry = RegistryFactory()
    assert insert_rows([]) == []
    kept = RegistryEvent.objects.create(registry=registry, to_state="pending")
    # A key already set: bulk_create's own error (the row exists).
    with pytest.raises(DatabaseError), transaction.atomic():
        insert_rows([kept])


def test_a_registry_and_its_cluster_are_locked_by_the_registrys_id() -> None:
    registry, detached = RegistryFactory(), RegistryFactory()
    Registry.objects.filter(pk=detached.pk).update(
        cluster=None, state="deprovisioning", deprovision_requested_at=detached.created_at
    )
    detached.refresh_from_db()

    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        locked, cluster = registry_lock_with_its_cluster(registry.pk)
        assert registry_lock_with_its_cluster(str(detached.pk)) == (detached, None)
        assert registry_lock_with_its_cluster(uuid.uuid4()) == (None, None)

    assert (locked, cluster) == (registry, registry.cluster)
    assert locked is not None
    assert locked.cluster is cluster  # set: not read again
    assert registry_locks._registry_cluster_lock._compiled["default"] is not None  # kept
    sqls = [query["sql"] for query in captured.captured_queries if "SELECT" in query["sql"]]
    assert len(sqls) == 6  # the cluster's lock, then the registry's, for each
    if connection.features.has_select_for_update:
        # The cluster alone is locked: the registry is read in a sub-select.
        assert sqls[0].startswith('SELECT "clusters_cluster"."id"'), sqls[0]
        assert sqls[0].endswith("LIMIT 1) LIMIT 1 FOR UPDATE"), sqls[0]
        assert " JOIN " not in sqls[0], sqls[0]


def test_insert_row_ignoring_conflicts_says_whether_the_row_went_in() -> None:
    cluster, other = ClusterFactory(), ClusterFactory()
    new = Registry(cluster=cluster, namespace="acme/1", driver="distribution")
    same_cluster = Registry(cluster=cluster, namespace="acme/2", driver="distribution")
    same_namespace = Registry(cluster=other, namespace="acme/1", driver="distribution")

    assert insert_row_ignoring_conflicts(new) is True
    with CaptureQueriesContext(connection) as again:
        # Another row's constraint (one registry a cluster, one namespace): no error, no row.
        assert insert_row_ignoring_conflicts(same_cluster) is False
        assert insert_row_ignoring_conflicts(same_namespace) is False

    assert not new._state.adding
    assert new._state.db == "default"
    assert as_orm(Registry.objects.get()) == as_orm(new)  # as bulk_create stores it
    assert compiled_module._inserts_ignoring_conflicts[(Registry, "default")] is not None
    assert [query["sql"].split(" (")[0].split(" INTO ")[1] for query in again] == [
        '"registries_registry"'
    ] * 2
    with pytest.raises(ValueError, match="needs the row's key"):
        insert_row_ignoring_conflicts(RegistryEvent(registry=new, to_state="pending"))


def test_save_fields_refuses_a_row_that_is_gone_as_save_does() -> None:
    registry = RegistryFactory()
    Registry.objects.filter(pk=registry.pk).delete()
    registry.last_error = "down"

    with pytest.raises(DatabaseError, match="did not affect any rows"):
        save_fields(registry, ["last_error"])


def test_publishing_a_variable_replaces_only_its_own_sources_value() -> None:
    registry = RegistryFactory()
    cluster = registry.cluster

    def upsert(value: str, source: str) -> tuple[object, bool, bool]:
        with transaction.atomic():
            variable, created, changed = locks.agent_environment_variable_upsert(
                cluster=cluster, name="X", value=value, source=source
            )
        return variable.value, created, changed

    assert upsert("1", "test") == ("1", True, False)
    assert upsert("1", "test") == ("1", False, False)
    assert upsert("2", "test") == ("2", False, True)
    assert upsert("3", "other") == ("2", False, False)  # another source's: left as it is


def test_from_db_builds_what_model_from_db_builds_and_runs_init_where_a_receiver_waits() -> None:
    registry = RegistryFactory()
    names = [field.attname for field in Registry._meta.concrete_fields]
    values = [getattr(registry, name) for name in names]

    fast = compiled_module.from_db(Registry, "default", names, values)
    orm = Registry.from_db("default", names, values)

    assert as_orm(fast) == as_orm(orm)
    assert (fast._state.db, fast._state.adding) == (orm._state.db, orm._state.adding)
    assert fast == orm
    assert fast.cluster == registry.cluster  # a real instance: its relations load

    seen: list[object] = []

    def receiver(sender: object, instance: object, **kwargs: object) -> None:
        seen.append(instance)

    post_init.connect(receiver, sender=Registry)
    try:
        again = compiled_module.from_db(Registry, "default", names, values)
    finally:
        post_init.disconnect(receiver, sender=Registry)
    assert seen == [again]  # a receiver of post_init: built through Model.__init__


def _answer() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 42")
        return int(cursor.fetchone()[0])


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_read_without_ping_sends_no_ping_and_runs_again_where_the_connection_broke(
    monkeypatch,
) -> None:
    connection.ensure_connection()
    wrapper = connections["default"]  # not the proxy: monkeypatch would delete its attributes
    monkeypatch.setattr(wrapper, "health_check_enabled", True)
    pings: list[bool] = []
    is_usable = wrapper.is_usable
    monkeypatch.setattr(wrapper, "is_usable", lambda: pings.append(True) or is_usable())
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        return _answer()

    connection.health_check_done = False
    assert compiled_module.read_without_ping("default", read) == 42
    assert (len(reads), pings) == (1, [])  # the read was the check

    before = connection.connection.info.backend_pid
    with connection._nodb_cursor() as other:  # PostgreSQL cuts the kept connection
        other.execute("SELECT pg_terminate_backend(%s)", [before])
    connection.health_check_done = False
    assert compiled_module.read_without_ping("default", read) == 42
    assert (len(reads), pings) == (3, [True])  # failed, checked, closed, read again
    assert connection.connection.info.backend_pid != before


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_read_without_ping_raises_its_own_error_and_reads_once(monkeypatch) -> None:
    connection.ensure_connection()
    monkeypatch.setattr(connections["default"], "health_check_enabled", True)
    connection.health_check_done = False
    reads: list[int] = []

    def read() -> None:
        reads.append(1)
        with connection.cursor() as cursor:  # canceled: an OperationalError of the query's own
            cursor.execute("SET statement_timeout = '10ms'")
            try:
                cursor.execute("SELECT pg_sleep(1)")
            finally:
                cursor.execute("RESET statement_timeout")

    with pytest.raises(OperationalError, match="statement timeout"):
        compiled_module.read_without_ping("default", read)
    assert reads == [1]
