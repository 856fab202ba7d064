"""``controlplane.api.pages.CompiledPage``: a page compiled once, run again with other values
and other pages, reads what the ORM reads (each row a ``RowView``: UUIDs as their text, the
model's properties, the ``select_related`` relations as instances, one a distinct row) with the
list's total, in one query; a query that does not fit is run by the ORM every time.

And ``ReadSerializer`` binds its getters from one copy of its fields made for the class, or
from its own copy when a field needs one; renders a row's method fields that declare the columns
they read (``from_columns``) from those columns."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import QuerySet
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers
from rest_framework.fields import SkipField

from clusters.api.serializers import ClusterSerializer, QueueSerializer
from clusters.models import Cluster, Queue
from controlplane.api.pages import CompiledPage, RowView
from controlplane.api.serializers import ReadSerializer, from_columns, plain
from tests.api.test_read_serializers import Toy
from tests.clusters.factories import ClusterFactory, OrganizationFactory, QueueFactory

pytestmark = pytest.mark.django_db


def _queues(cluster_id: Any) -> QuerySet[Queue]:
    return (
        Queue.objects.filter(cluster_id=cluster_id)
        .select_related("created_by", "dispatch_paused_by")
        .order_by("key", "pk")
    )


def _as_shown(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def _fields(instance: Any, model: type) -> dict[str, Any]:
    return {f.attname: _as_shown(getattr(instance, f.attname)) for f in model._meta.concrete_fields}


@pytest.fixture
def queues() -> list[Queue]:
    cluster = ClusterFactory()
    alice = User.objects.create_user("alice", "alice@example.com", first_name="Alice")
    bob = User.objects.create_user("bob")
    made = [
        QueueFactory(cluster=cluster, key=f"q{i}", created_by=alice if i % 2 else bob, hosted=i < 2)
        for i in range(5)
    ]
    Queue.objects.filter(key="q3").update(dispatch_paused=True, dispatch_paused_by=bob)
    Queue.objects.filter(key="q4").update(created_by=None)
    QueueFactory(key="elsewhere")  # another cluster's: never listed
    return made


def test_pages_read_what_the_orm_reads(queues) -> None:
    page = CompiledPage(Queue, _queues, "cluster")
    cluster_id = queues[0].cluster_id

    first, total = page(cluster_id, offset=0, limit=3)
    second, again = page(str(cluster_id), offset=3, limit=3)

    assert page._compiled["default"] is not None
    assert (total, again) == (5, 5)
    expected = list(_queues(cluster_id))
    assert [row.key for row in first + second] == [queue.key for queue in expected]
    for row, queue in zip(first + second, expected, strict=True):
        assert isinstance(row, RowView)
        assert _fields(row, Queue) == _fields(queue, Queue)  # UUIDs as their text
        assert (row.pk, row.hosted, row.shape) == (str(queue.pk), queue.hosted, queue.shape)
        for name in ("created_by", "dispatch_paused_by"):
            related, orm = getattr(row, name), getattr(queue, name)
            assert (related is None) == (orm is None)
            if orm is not None:
                assert isinstance(related, User)
                assert _fields(related, User) == _fields(orm, User)
                assert (related._state.db, related._state.adding) == ("default", False)
    # One instance a distinct related row of a page (q0 and q2 are bob's, q1 alice's).
    assert len({id(row.created_by) for row in first}) == 2


def test_the_next_pages_send_only_the_sql(queues) -> None:
    page = CompiledPage(Queue, _queues, "cluster")
    page(queues[0].cluster_id, offset=0, limit=2)

    with CaptureQueriesContext(connection) as captured:
        rows, total = page(queues[0].cluster_id, offset=2, limit=2)

    assert len(captured) == 1
    assert [row.key for row in rows] == ["q2", "q3"]
    assert total == 5


def test_a_page_past_the_end_is_empty_and_counts_apart(queues) -> None:
    page = CompiledPage(Queue, _queues, "cluster")

    assert page(queues[0].cluster_id, offset=10, limit=5) == ([], None)
    assert page(uuid.uuid4(), offset=0, limit=5) == ([], None)
    assert page.count(queues[0].cluster_id) == 5


def test_a_query_that_does_not_fit_is_run_by_the_orm_each_time(queues) -> None:
    # Its parameters are not the values given: not kept.
    page = CompiledPage(Queue, lambda cluster_id: _queues(cluster_id).exclude(key="q0"), "cluster")

    for _ in range(2):
        rows, total = page(queues[0].cluster_id, offset=0, limit=10)
        assert page._compiled["default"] is None
        assert [row.key for row in rows] == ["q1", "q2", "q3", "q4"]
        assert all(isinstance(row, Queue) for row in rows)
        assert total == 4


def test_rows_render_as_instances_do(queues, rf) -> None:
    """The serializers give a row what they give the ORM's instance (the golden responses
    check the bytes through the API)."""
    organization = OrganizationFactory()
    clusters = [ClusterFactory(organization=organization, name=f"c{i}") for i in range(3)]
    Cluster.objects.filter(pk=clusters[0].pk).update(
        default_queue=QueueFactory(cluster=clusters[0])
    )
    context = {"request": rf.get("/"), "organization": organization}
    cluster_page = CompiledPage(
        Cluster,
        lambda org: (
            Cluster.objects.filter(organization_id=org)
            .select_related("created_by")
            .order_by("name", "pk")
        ),
        "organization",
    )
    queue_page = CompiledPage(Queue, _queues, "cluster")

    for page, value, serializer, queryset in [
        (cluster_page, organization.pk, ClusterSerializer, organization.clusters.order_by("name")),
        (queue_page, queues[0].cluster_id, QueueSerializer, _queues(queues[0].cluster_id)),
    ]:
        rows, _ = page(value, offset=0, limit=10)
        ours = serializer(rows, many=True, context=context).data
        theirs = serializer(list(queryset), many=True, context=context).data
        assert ours == theirs


def test_a_read_serializer_binds_from_one_copy_of_its_fields_made_for_its_class() -> None:
    first, second = ClusterSerializer(), ClusterSerializer()

    assert ClusterSerializer._binders() is not None
    getters = dict(first._getters)
    # Its method fields are its own methods, its nested serializers its own.
    assert getters["url"].__self__ is first  # type: ignore[attr-defined]
    assert dict(second._getters)["url"].__self__ is second  # type: ignore[attr-defined]
    # A field that needs its own copy (a nested list) keeps DRF's copy for each serializer.
    assert Toy._binders() is None


def test_a_row_is_rendered_from_its_values_where_a_field_reads_a_column() -> None:
    plan = ClusterSerializer()._row_plan(RowView.of(Cluster))

    assert plan is not None
    columns = {name: column for name, column, _ in plan}
    assert columns["id"] == "id"
    assert columns["default_queue_id"] == "default_queue_id"
    assert columns["created_at"] == "created_at"
    # Method fields and nested serializers go through their getters.
    assert columns["url"] is None
    assert columns["created_by"] is None
    # A serializer whose fields need their own copies has no plan.
    assert Toy()._row_plan(RowView.of(Cluster)) is None


def test_a_uuid_in_another_format_is_rendered_by_its_field_not_as_the_rows_text() -> None:
    class Hex(ReadSerializer):
        id = serializers.UUIDField(read_only=True, format="hex")
        default_queue_id = serializers.UUIDField(read_only=True)

    plan = Hex()._row_plan(RowView.of(Cluster))

    assert plan is not None
    columns = {name: column for name, column, _ in plan}
    assert columns == {"id": None, "default_queue_id": "default_queue_id"}


def test_a_related_model_may_be_read_in_part_as_defer_reads_it(queues) -> None:
    page = CompiledPage(
        Queue, lambda cluster_id: _queues(cluster_id).defer("created_by__password"), "cluster"
    )
    rows, _ = page(queues[0].cluster_id, offset=0, limit=1)
    (row,) = rows

    assert page._compiled["default"] is not None
    assert "password" not in row.created_by.__dict__
    assert row.created_by.username == "bob"
    with CaptureQueriesContext(connection) as captured:
        assert row.created_by.password == User.objects.get(username="bob").password
    assert len(captured) == 2  # the deferred field's own query, as Django's, and ours


def test_the_listed_model_read_in_part_does_not_fit(queues) -> None:
    page = CompiledPage(
        Queue, lambda cluster_id: _queues(cluster_id).defer("description"), "cluster"
    )

    rows, total = page(queues[0].cluster_id, offset=0, limit=10)

    assert page._compiled["default"] is None
    assert all(isinstance(row, Queue) for row in rows)
    assert total == 5


class Declared(ReadSerializer):
    """A method field rendered from the row's columns (``from_columns``), one from a column a
    row lacks (its method, then), and one that is left out of some items (``SkipField``)."""

    name = serializers.CharField(read_only=True)
    shout = serializers.SerializerMethodField()
    tagged = serializers.SerializerMethodField()
    unknown = serializers.SerializerMethodField()
    maybe = serializers.SerializerMethodField()

    calls: ClassVar[list[str]] = []

    @from_columns(lambda serializer: serializer.upper, "name", suffix="description")
    def get_shout(self, cluster: Any) -> str:
        self.calls.append("shout")
        return self.upper(cluster.name, suffix=cluster.description)

    @from_columns(plain(lambda pk: f"cluster:{pk}"), "pk")
    def get_tagged(self, cluster: Any) -> str:
        self.calls.append("tagged")
        return f"cluster:{cluster.pk}"

    @from_columns(plain(str), "not_a_column")
    def get_unknown(self, cluster: Any) -> str:
        return "method"

    def get_maybe(self, cluster: Any) -> str:
        if cluster.name == "skip":
            raise SkipField
        return "here"

    def upper(self, name: str, suffix: str) -> str:
        return f"{name.upper()}!{suffix}"


def test_method_fields_that_declare_their_columns_render_a_row_from_them() -> None:
    organization = OrganizationFactory()
    for name in ("keep", "skip"):
        ClusterFactory(organization=organization, name=name, description="d")
    page = CompiledPage(
        Cluster,
        lambda org: Cluster.objects.filter(organization_id=org).order_by("name"),
        "organization",
    )
    rows, _ = page(organization.pk, offset=0, limit=10)
    Declared.calls.clear()

    items = [dict(item) for item in Declared(rows, many=True).data]

    keep, skip = rows
    assert items == [
        {"name": "keep", "shout": "KEEP!d", "tagged": f"cluster:{keep.pk}",
         "unknown": "method", "maybe": "here"},
        # SkipField: the item rendered step by step, by the methods
        {"name": "skip", "shout": "SKIP!d", "tagged": f"cluster:{skip.pk}", "unknown": "method"},
    ]  # fmt: skip
    assert Declared.calls == ["shout", "tagged"]  # the first item's methods were not called
    instances = list(Cluster.objects.filter(organization=organization).order_by("name"))
    assert [dict(item) for item in Declared(instances, many=True).data] == items


def test_the_apis_lists_are_compiled_pages_that_fit(api, cluster) -> None:
    from clusters.api import base

    QueueFactory(cluster=cluster, key="q0")
    base._compiled_pages.clear()
    for path in ("/clusters", f"/clusters/{cluster.pk}/queues"):
        assert api.get(path).status_code == 200
    assert len(base._compiled_pages) == 2
    for page in base._compiled_pages.values():
        assert page._compiled["default"] is not None  # run as compiled, not by the ORM
