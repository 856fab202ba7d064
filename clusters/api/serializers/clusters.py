"""Clusters in Buildkite's shape: the cluster a response shows, and what creating or updating
one may send."""

from __future__ import annotations

from functools import partial
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clusters.api.serializers.common import (
    Route,
    StrictBooleanField,
    UserSerializer,
    blank_nulls,
    graphql_id,
)
from clusters.models import COLOR_PATTERN, Cluster
from controlplane.api.fields import TimestampField, empty_to_none
from controlplane.api.serializers import ReadSerializer, from_columns, plain

#: A cluster's ``graphql_id`` of its primary key (in the class, ``graphql_id`` is the field).
CLUSTER_GRAPHQL_ID = partial(graphql_id, "Cluster")


class ClusterSerializer(ReadSerializer):
    PLAIN_JSON = True  # strings, booleans, None and integers only

    id = serializers.UUIDField(read_only=True)
    graphql_id = serializers.SerializerMethodField()
    default_queue_id = serializers.UUIDField(read_only=True, allow_null=True)
    name = serializers.CharField(read_only=True)
    description = serializers.SerializerMethodField()
    emoji = serializers.SerializerMethodField()
    color = serializers.SerializerMethodField()
    maintainers = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()
    queues_url = serializers.SerializerMethodField()
    default_queue_url = serializers.SerializerMethodField()
    created_at = TimestampField()
    created_by = UserSerializer(read_only=True, allow_null=True)
    hosted_git_mirror_enabled = serializers.BooleanField(read_only=True)
    hosted_container_cache_enabled = serializers.BooleanField(read_only=True)

    @from_columns(plain(CLUSTER_GRAPHQL_ID), "pk")
    def get_graphql_id(self, cluster: Cluster) -> str:
        return CLUSTER_GRAPHQL_ID(cluster.pk)

    @from_columns(plain(empty_to_none), "description")
    def get_description(self, cluster: Cluster) -> str | None:
        return empty_to_none(cluster.description)

    @from_columns(plain(empty_to_none), "emoji")
    def get_emoji(self, cluster: Cluster) -> str | None:
        return empty_to_none(cluster.emoji)

    @from_columns(plain(empty_to_none), "color")
    def get_color(self, cluster: Cluster) -> str | None:
        return empty_to_none(cluster.color)

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "users": {"type": "array", "items": {"type": "object"}},
                "teams": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["users", "teams"],
        }
    )
    def get_maintainers(self, cluster: Cluster) -> dict[str, list[Any]]:
        return {"users": [], "teams": []}  # maintainers are not modelled here

    _cluster = Route("api:cluster", "cluster_id", organization=True)
    _console = Route("admin:clusters_cluster_change", "object_id")
    _queues = Route("api:queues", "cluster_id", organization=True)
    _queue = Route("api:queue", "cluster_id", "queue_id", organization=True)

    @from_columns(_cluster.of, cluster_id="pk")
    def get_url(self, cluster: Cluster) -> str:
        return self._cluster(cluster_id=cluster.pk)

    @from_columns(_console.of, object_id="pk")
    def get_web_url(self, cluster: Cluster) -> str:
        return self._console(object_id=cluster.pk)

    @from_columns(_queues.of, cluster_id="pk")
    def get_queues_url(self, cluster: Cluster) -> str:
        return self._queues(cluster_id=cluster.pk)

    def get_default_queue_url(self, cluster: Cluster) -> str | None:
        if cluster.default_queue_id is None:
            return None
        return self._queue(cluster_id=cluster.pk, queue_id=cluster.default_queue_id)


class ClusterCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    emoji = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=64)
    color = serializers.RegexField(
        COLOR_PATTERN, required=False, allow_blank=True, allow_null=True, max_length=7
    )
    hosted_git_mirror_enabled = StrictBooleanField(
        required=False, help_text="Buildkite's flag, kept and shown; `true` or `false` only."
    )
    hosted_container_cache_enabled = StrictBooleanField(
        required=False, help_text="Buildkite's flag, kept and shown; `true` or `false` only."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return blank_nulls(attrs, "description", "emoji", "color")


class ClusterUpdateSerializer(ClusterCreateSerializer):
    """PUT and PATCH both change only what is sent (as Buildkite's clients expect)."""

    name = serializers.CharField(max_length=100, required=False)
    default_queue_id = serializers.UUIDField(required=False, allow_null=True)  # null: none
