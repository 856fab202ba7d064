"""What the REST API reads and writes, in Buildkite's shapes (notes: buildkite-api.md §1-3).

Output serializers say what a response holds, field by field; input serializers say what a
request may send. Writes go through ``clusters.services``; these only validate and shape.
Timestamps are ISO 8601 UTC with milliseconds (``2023-05-03T04:17:55.867Z``); ``graphql_id``
is base64 of ``<Type>---<uuid>``, as Buildkite's are.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clusters.models import COLOR_PATTERN, Cluster
from controlplane.api.fields import TimestampField, empty_to_none


def graphql_id(type_name: str, pk: uuid.UUID | int) -> str:
    return base64.b64encode(f"{type_name}---{pk}".encode()).decode()


def absolute(context: Mapping[str, Any], name: str, **kwargs: Any) -> str:
    request = context["request"]
    return str(request.build_absolute_uri(reverse(name, kwargs=kwargs)))


def blank_nulls(attrs: dict[str, Any], *names: str) -> dict[str, Any]:
    """A ``null`` sent for a text field means "empty", which the models store as ""."""
    for name in names:
        if name in attrs and attrs[name] is None:
            attrs[name] = ""
    return attrs


class UserSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A user as Buildkite shows one (``created_by``, ``dispatch_paused_by``)."""

    id = serializers.SerializerMethodField()
    graphql_id = serializers.SerializerMethodField()
    name = serializers.SerializerMethodField()
    email = serializers.SerializerMethodField()
    avatar_url = serializers.SerializerMethodField()
    created_at = TimestampField(source="date_joined")

    def get_id(self, user: User) -> str:
        return str(user.pk)

    def get_graphql_id(self, user: User) -> str:
        return graphql_id("User", user.pk)

    def get_name(self, user: User) -> str:
        return user.get_full_name() or user.get_username()

    @extend_schema_field({"type": "string", "format": "email", "nullable": True})
    def get_email(self, user: User) -> str | None:
        return user.email or None  # API-only users (create_api_token) may have none

    def get_avatar_url(self, user: User) -> str:
        digest = hashlib.md5(user.email.strip().lower().encode(), usedforsecurity=False)
        return f"https://www.gravatar.com/avatar/{digest.hexdigest()}"


class ClusterSerializer(serializers.Serializer):  # type: ignore[type-arg]
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

    def get_graphql_id(self, cluster: Cluster) -> str:
        return graphql_id("Cluster", cluster.pk)

    def get_description(self, cluster: Cluster) -> str | None:
        return empty_to_none(cluster.description)

    def get_emoji(self, cluster: Cluster) -> str | None:
        return empty_to_none(cluster.emoji)

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

    def _url_kwargs(self, cluster: Cluster) -> dict[str, Any]:
        return {"org_slug": self.context["organization"].slug, "cluster_id": cluster.pk}

    def get_url(self, cluster: Cluster) -> str:
        return absolute(self.context, "api:cluster", **self._url_kwargs(cluster))

    def get_web_url(self, cluster: Cluster) -> str:
        return absolute(self.context, "admin:clusters_cluster_change", object_id=cluster.pk)

    def get_queues_url(self, cluster: Cluster) -> str:
        return absolute(self.context, "api:queues", **self._url_kwargs(cluster))

    def get_default_queue_url(self, cluster: Cluster) -> str | None:
        if cluster.default_queue_id is None:
            return None
        kwargs = {**self._url_kwargs(cluster), "queue_id": cluster.default_queue_id}
        return absolute(self.context, "api:queue", **kwargs)


class ClusterCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    emoji = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=64)
    color = serializers.RegexField(
        COLOR_PATTERN, required=False, allow_blank=True, allow_null=True, max_length=7
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return blank_nulls(attrs, "description", "emoji", "color")


class ClusterUpdateSerializer(ClusterCreateSerializer):
    """PUT and PATCH both change only what is sent (as Buildkite's clients expect)."""

    name = serializers.CharField(max_length=100, required=False)
    default_queue_id = serializers.UUIDField(required=False, allow_null=True)  # null: none
