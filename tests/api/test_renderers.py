"""``controlplane.api.renderers.JSONRenderer`` writes what the REST framework's ``JSONRenderer``
writes, byte for byte: a ``PlainJSON`` by orjson, anything orjson would write otherwise (or
refuses) and any other data by the REST framework. And the serializers that say they render
plain JSON do, over a fixture with every case."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.test import RequestFactory
from rest_framework import renderers

from clusters.api.serializers import ClusterSerializer, QueueSerializer, UserSerializer
from clusters.models import Cluster, Organization, Queue
from controlplane.api import renderers as renderers_module
from controlplane.api.renderers import JSONRenderer, PlainJSON
from controlplane.api.serializers import ReadSerializer
from tests.api.golden_world import ORG, build_world

PLAIN: list[Any] = [
    {
        "text": 'quotes " and \\ backslashes, tabs\t, newlines\n, \x00\x1f\x7f controls',
        "unicode": "é ü 日本 \U0001f680 and the line separators \u2028 \u2029",
        "numbers": [0, -1, 2**63 - 1, -(2**63)],
        "flags": [True, False, None],
        "nested": {"empty": {}, "list": [], "uuid": uuid.UUID(int=7)},
    },
    {"": "an empty key", "b": 1, "a": 2},  # keys in their order, not sorted
]


@pytest.mark.parametrize(
    "data",
    [
        PLAIN,
        [],
        [{"when": dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)}],  # DRF's format
        [{"big": 2**64}],  # past orjson's integers
        [{"surrogate": "\ud800"}],  # refused by both
    ],
    ids=["plain", "empty", "datetime", "big integer", "lone surrogate"],
)
def test_a_plain_list_is_written_as_the_rest_framework_writes_it(data) -> None:
    theirs: bytes | Exception
    try:
        theirs = renderers.JSONRenderer().render(data)
    except UnicodeEncodeError as exc:
        theirs = exc

    try:
        ours: bytes | Exception = JSONRenderer().render(PlainJSON(data))
    except UnicodeEncodeError as exc:
        ours = exc

    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs)
    else:
        assert ours == theirs


def test_orjson_writes_a_plain_list_and_nothing_else(monkeypatch) -> None:
    calls: list[Any] = []
    real = renderers_module.orjson.dumps

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(renderers_module.orjson, "dumps", counting)
    renderer = JSONRenderer()

    renderer.render(PlainJSON(PLAIN))
    renderer.render(PLAIN)  # not vouched for
    renderer.render({"detail": "x"})
    renderer.render(
        PlainJSON(PLAIN), "application/json; indent=2"
    )  # indented: the REST framework's
    assert len(calls) == 1
    assert renderer.render(PlainJSON(PLAIN), "application/json; indent=2") == (
        renderers.JSONRenderer().render(PLAIN, "application/json; indent=2")
    )
    assert renderer.render(None) == b""


def _types(value: Any) -> set[type]:
    found = {type(value)}
    if isinstance(value, dict):
        assert all(type(key) is str for key in value)
        for item in value.values():
            found |= _types(item)
    elif isinstance(value, list):
        for item in value:
            found |= _types(item)
    return found


@pytest.mark.django_db
def test_the_serializers_that_say_they_render_plain_json_do() -> None:
    build_world()
    organization = Organization.objects.get(slug=ORG)
    context = {"request": RequestFactory().get("/"), "organization": organization}
    rendered = [
        ClusterSerializer(
            Cluster.objects.select_related("created_by"), many=True, context=context
        ).data,
        QueueSerializer(
            Queue.objects.select_related("created_by", "dispatch_paused_by"),
            many=True,
            context=context,
        ).data,
    ]
    plain = {cls for cls in (ClusterSerializer, QueueSerializer, UserSerializer) if cls.PLAIN_JSON}

    assert plain == {ClusterSerializer, QueueSerializer, UserSerializer}
    assert not ReadSerializer.PLAIN_JSON
    for data in rendered:
        assert data
        types = _types(list(data)) - {list}
        assert types <= {dict, str, int, bool, type(None)}, types


def test_a_subclass_does_not_inherit_the_promise_of_plain_json() -> None:
    from rest_framework import serializers

    from controlplane.api.serializers import renders_plain_json

    class WithAFloat(ClusterSerializer):
        load = serializers.FloatField(read_only=True)

    assert renders_plain_json(ClusterSerializer)
    assert not renders_plain_json(WithAFloat)
