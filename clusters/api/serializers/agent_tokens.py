"""Cluster agent tokens in Buildkite's shape (its REST API's cluster tokens; see docs/api.md).

The secret (``token``) is in the create response only: it is never stored (only its SHA-256 is),
so no other response could carry it.

``allowed_ip_addresses`` is Buildkite's: one string of space-separated IPv4 CIDR blocks (at most
24; ``0.0.0.0/0``, the default, allows every address), set on create and on update, and enforced
wherever the token is used (``clusters.ip_allow_lists``). Anything else is refused (422).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clusters import ip_allow_lists
from clusters.api.serializers.common import Route, UserSerializer, graphql_id
from clusters.models import ClusterAgentToken
from controlplane.api.fields import TimestampField
from controlplane.api.serializers import ReadSerializer

#: How far ahead an expiry must be, at creation (as on Buildkite).
MIN_EXPIRY = timedelta(minutes=10)

ALLOW_LIST_HELP = (
    "Space-separated IPv4 CIDR blocks the token may be used from, at most "
    f"{ip_allow_lists.MAX_BLOCKS} (such as `202.144.0.0/24 10.0.0.0/8`); "
    f"`{ip_allow_lists.ANY_ADDRESS}` allows every address. Enforced on the agent environment "
    "endpoint and the registry token endpoint (403 from elsewhere)."
)


@extend_schema_field({"type": "string", "example": "202.144.0.0/24"})
class AllowedIpAddressesField(serializers.Field):  # type: ignore[type-arg]
    """An allow-list, normalized (``ip_allow_lists.normalized``): only a string of IPv4 CIDR
    blocks; a number, a list or a boolean is refused, not converted."""

    def to_internal_value(self, data: Any) -> str:
        try:
            return ip_allow_lists.normalized(data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc

    def to_representation(self, value: str) -> str:
        return value


class AgentTokenSerializer(ReadSerializer):
    """A cluster agent token, without its secret."""

    id = serializers.UUIDField(read_only=True)
    graphql_id = serializers.SerializerMethodField()
    description = serializers.CharField(read_only=True)
    allowed_ip_addresses = AllowedIpAddressesField(read_only=True, help_text=ALLOW_LIST_HELP)
    expires_at = TimestampField(allow_null=True)
    url = serializers.SerializerMethodField()
    cluster_url = serializers.SerializerMethodField()
    created_at = TimestampField()
    created_by = UserSerializer(read_only=True, allow_null=True)

    def get_graphql_id(self, token: ClusterAgentToken) -> str:
        return graphql_id("ClusterToken", token.pk)

    _token = Route("api:token", "cluster_id", "token_id", organization=True)
    _cluster = Route("api:cluster", "cluster_id", organization=True)

    def get_url(self, token: ClusterAgentToken) -> str:
        return self._token(cluster_id=token.cluster_id, token_id=token.pk)

    def get_cluster_url(self, token: ClusterAgentToken) -> str:
        return self._cluster(cluster_id=token.cluster_id)


class AgentTokenCreatedSerializer(AgentTokenSerializer):
    """A new cluster agent token and, this once, its secret (``token``)."""

    # The secret comes in ``context["secret"]``: the model does not hold it.
    token = serializers.SerializerMethodField(
        help_text="The secret. Shown only in this response: store it now."
    )

    def get_token(self, token: ClusterAgentToken) -> str:
        secret: str = self.context["secret"]
        return secret


class AgentTokenCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A new token; without ``allowed_ip_addresses`` (or with null) it may be used from any
    address."""

    description = serializers.CharField(max_length=255)
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When the token stops working (at least 10 minutes ahead); never if absent. "
        "It cannot be changed later.",
    )
    allowed_ip_addresses = AllowedIpAddressesField(
        required=False, allow_null=True, help_text=ALLOW_LIST_HELP
    )

    def validate_expires_at(self, value: datetime | None) -> datetime | None:
        if value is not None and value < timezone.now() + MIN_EXPIRY:
            raise serializers.ValidationError("Must be at least 10 minutes in the future.")
        return value


class AgentTokenUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """PUT and PATCH both change only what is sent: the description, the allow-list (a narrower
    list applies at the token's next use; null leaves it as it is). The expiry cannot be
    changed."""

    description = serializers.CharField(max_length=255, required=False)
    allowed_ip_addresses = AllowedIpAddressesField(
        required=False, allow_null=True, help_text=ALLOW_LIST_HELP
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of ``services.agent_token_update`` (but the token)."""
        sent = self.initial_data if isinstance(self.initial_data, Mapping) else {}
        if "expires_at" in sent:
            raise serializers.ValidationError(
                {"expires_at": "A token's expiry cannot be changed; create a new token instead."}
            )
        return {name: value for name, value in attrs.items() if value is not None}
