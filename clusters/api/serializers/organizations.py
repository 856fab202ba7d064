"""The caller's own API token and organization, in Buildkite's shapes (its access-token and
organizations APIs), with the fields this service has: no pipelines, agents or emojis URLs."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clusters.api.serializers.common import absolute, graphql_id
from clusters.models import ApiScope, ApiToken, Organization
from controlplane.api.fields import TimestampField
from controlplane.api.serializers import ReadSerializer


class OrganizationSerializer(ReadSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    graphql_id = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()
    name = serializers.CharField(read_only=True)
    slug = serializers.CharField(read_only=True)
    created_at = TimestampField()

    def get_graphql_id(self, organization: Organization) -> str:
        return graphql_id("Organization", organization.uuid)

    def get_url(self, organization: Organization) -> str:
        return absolute(self.context, "api:organization", org_slug=organization.slug)

    def get_web_url(self, organization: Organization) -> str:
        return absolute(
            self.context, "admin:clusters_organization_change", object_id=organization.pk
        )


class AccessTokenSerializer(ReadSerializer):
    uuid = serializers.UUIDField(source="pk", read_only=True)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiScope.choices), read_only=True
    )
    description = serializers.CharField(read_only=True)
    created_at = TimestampField()
    user = serializers.SerializerMethodField()

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string", "format": "email", "nullable": True},
            },
            "required": ["name", "email"],
        }
    )
    def get_user(self, token: ApiToken) -> dict[str, Any]:
        user: User = token.user
        return {"name": user.get_full_name() or user.get_username(), "email": user.email or None}
