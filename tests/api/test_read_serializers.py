"""``ReadSerializer`` (``controlplane.api.serializers``) answers what DRF's own
``Serializer.to_representation`` answers: for every output serializer of the REST API over a
fixture with every case (``golden_world``), and for each rule of DRF's field walk it keeps."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import RequestFactory
from rest_framework import serializers

from clusters.api.serializers import (
    AccessTokenSerializer,
    AgentTokenCreatedSerializer,
    AgentTokenSerializer,
    ClusterSerializer,
    OrganizationSerializer,
    QueueEnvironmentSerializer,
    QueueSerializer,
    UserSerializer,
)
from clusters.job_environment import job_environment
from clusters.models import ApiToken, Cluster, ClusterAgentToken, Organization, Queue
from controlplane.api.serializers import ReadSerializer
from registries.api.serializers import RegistrySerializer
from registries.selectors import registry_queryset
from tests.api.golden_world import ORG, build_world

Render = Callable[[type, Any, dict[str, Any]], Any]


def _render(serializer_class: type, instance: Any, context: dict[str, Any]) -> Any:
    request = RequestFactory().get("/", secure=True)
    return serializer_class(instance, context={"request": request, **context}).data


def _drf_render(monkeypatch: pytest.MonkeyPatch) -> Render:
    """``_render`` with every ``ReadSerializer`` (nested ones too) walking its fields as DRF
    does."""
    monkeypatch.setattr(
        ReadSerializer, "to_representation", serializers.Serializer.to_representation
    )
    return _render


@pytest.mark.django_db
def test_every_output_serializer_answers_what_drf_answers(monkeypatch) -> None:
    build_world()
    organization = Organization.objects.get(slug=ORG)
    context = {"organization": organization}
    cases: list[tuple[type, Any, dict[str, Any]]] = [
        (OrganizationSerializer, organization, context),
        (AccessTokenSerializer, ApiToken.objects.select_related("user").get(), context),
        (ClusterSerializer, list(Cluster.objects.select_related("created_by")), context),
        (
            QueueSerializer,
            list(Queue.objects.select_related("created_by", "dispatch_paused_by")),
            context,
        ),
        (AgentTokenSerializer, list(ClusterAgentToken.objects.all()), context),
        (
            AgentTokenCreatedSerializer,
            ClusterAgentToken.objects.first(),
            {**context, "secret": "bkct_x"},
        ),
        (UserSerializer, Queue.objects.get(key="macos").dispatch_paused_by, context),
        *(
            (RegistrySerializer, registry_queryset(cluster).get(), context)
            for cluster in Cluster.objects.filter(registry__isnull=False)
        ),
        *(
            (QueueEnvironmentSerializer, job_environment(queue), {})
            for queue in Queue.objects.all()
        ),
    ]
    instances = [
        (cls, instance, ctx)
        for cls, many, ctx in cases
        for instance in (many if isinstance(many, list) else [many])
    ]
    fast = [_render(cls, instance, ctx) for cls, instance, ctx in instances]

    drf_render = _drf_render(monkeypatch)
    drf = [drf_render(cls, instance, ctx) for cls, instance, ctx in instances]

    assert len(instances) == 22
    for (cls, instance, _), ours, theirs in zip(instances, fast, drf, strict=True):
        assert ours == theirs, (cls.__name__, instance)
        assert list(ours) == list(theirs)  # the same keys, in the same order


# --- the rules of DRF's walk that ReadSerializer keeps --------------------------------------------


class Inner(ReadSerializer):
    label = serializers.CharField()


class Toy(ReadSerializer):
    name = serializers.CharField()
    number = serializers.IntegerField(allow_null=True)
    flag = serializers.BooleanField()
    ident = serializers.UUIDField()
    hexed = serializers.UUIDField(source="ident", format="hex")
    shouted = serializers.SerializerMethodField()
    called = serializers.CharField(source="describe")  # a method: DRF calls it
    dotted = serializers.CharField(source="inner.label", allow_null=True)  # through None: None
    inner = Inner(allow_null=True)
    inners = Inner(many=True)
    defaulted = serializers.CharField(default="the default")  # missing: the default
    optional = serializers.CharField(required=False)  # missing: left out
    nullable = serializers.CharField(allow_null=True, required=False)  # missing: None

    def get_shouted(self, thing: Any) -> str:
        return str(thing["name"] if isinstance(thing, dict) else thing.name).upper()


class Thing(SimpleNamespace):
    def describe(self) -> str:
        return f"thing {self.name}"


THINGS = [
    Thing(
        name="a",
        number=1,
        flag=True,
        ident=uuid.UUID(int=1),
        inner=SimpleNamespace(label="x"),
        inners=[],
    ),
    Thing(
        name=7,
        number=None,
        flag=0,
        ident=uuid.UUID(int=2),
        inner=None,
        inners=[SimpleNamespace(label=1), SimpleNamespace(label="y")],
        optional="here",
        nullable="there",
    ),
    # A mapping is read by key, as DRF does.
    {
        "name": "m",
        "number": 2,
        "flag": "false",
        "ident": uuid.UUID(int=3),
        "describe": "d",
        "inner": {"label": "i"},
        "inners": [],
    },
]


@pytest.mark.parametrize("thing", THINGS, ids=["object", "nulls and extras", "mapping"])
def test_each_field_is_read_as_drf_reads_it(thing: Any, monkeypatch) -> None:
    ours = Toy(thing).data

    monkeypatch.setattr(
        ReadSerializer, "to_representation", serializers.Serializer.to_representation
    )
    theirs = Toy(thing).data

    assert ours == theirs
    assert list(ours) == list(theirs)


def test_what_drf_would_do_is_what_it_does() -> None:
    """The rules above, spelled out once."""
    data = Toy(THINGS[0]).data

    assert (data["ident"], data["hexed"]) == (str(uuid.UUID(int=1)), uuid.UUID(int=1).hex)
    assert data["called"] == "thing a"
    assert data["dotted"] == "x"
    assert data["defaulted"] == "the default"
    assert "optional" not in data
    assert data["nullable"] is None
    assert Toy(THINGS[1]).data["inner"] is None
    assert Toy(THINGS[1]).data["dotted"] is None
    assert Toy(THINGS[1]).data["name"] == "7"
