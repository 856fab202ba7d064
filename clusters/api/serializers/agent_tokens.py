"""Cluster agent tokens in Buildkite's shape (its REST API's cluster tokens; see docs/api.md).

The secret (``token``) is in the create response only: it is never stored (only its SHA-256 is),
so no other response could carry it.

Buildkite's ``allowed_ip_addresses`` is neither returned nor accepted: this service does not
enforce IP allow-lists, and a field that looks like a restriction but restricts nothing would
mislead. A request that sends it is refused (422) rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from clusters.api.serializers.common import UserSerializer, absolute, graphql_id
from clusters.models import ClusterAgentToken
from controlplane.api.fields import TimestampField

#: How far ahead an expiry must be, at creation (as on Buildkite).
MIN_EXPIRY = timedelta(minutes=10)

NO_IP_ALLOW_LISTS = (
    "This service does not enforce IP allow-lists; leave allowed_ip_addresses out: "
    "the token is usable from any address."
)


class AgentTokenSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A cluster agent token, without its secret."""

    id = serializers.UUIDField(read_only=True)
    graphql_id = serializers.SerializerMethodField()
    description = serializers.CharField(read_only=True)
    expires_at = TimestampField(allow_null=True)
    url = serializers.SerializerMethodField()
    cluster_url = serializers.SerializerMethodField()
    created_at = TimestampField()
    created_by = UserSerializer(read_only=True, allow_null=True)

    def get_graphql_id(self, token: ClusterAgentToken) -> str:
        return graphql_id("ClusterToken", token.pk)

    def _url_kwargs(self, token: ClusterAgentToken) -> dict[str, Any]:
        return {"org_slug": self.context["organization"].slug, "cluster_id": token.cluster_id}

    def get_url(self, token: ClusterAgentToken) -> str:
        return absolute(self.context, "api:token", **self._url_kwargs(token), token_id=token.pk)

    def get_cluster_url(self, token: ClusterAgentToken) -> str:
        return absolute(self.context, "api:cluster", **self._url_kwargs(token))


class AgentTokenCreatedSerializer(AgentTokenSerializer):
    """A new cluster agent token and, this once, its secret (``token``)."""

    # The secret comes in ``context["secret"]``: the model does not hold it.
    token = serializers.SerializerMethodField(
        help_text="The secret. Shown only in this response: store it now."
    )

    def get_token(self, token: ClusterAgentToken) -> str:
        secret: str = self.context["secret"]
        return secret


class _RefusesUnenforcedFields(serializers.Serializer):  # type: ignore[type-arg]
    # Refuses fields that a client would expect to take effect but that would not.
    refused: dict[str, str] = {"allowed_ip_addresses": NO_IP_ALLOW_LISTS}
    #: Values that ask for nothing this service does not do: no restriction at all.
    harmless: dict[str, tuple[object, ...]] = {"allowed_ip_addresses": (None, "", "0.0.0.0/0")}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        sent = self.initial_data if isinstance(self.initial_data, Mapping) else {}
        errors = {
            name: message
            for name, message in self.refused.items()
            if name in sent and sent[name] not in self.harmless.get(name, ())
        }
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class AgentTokenCreateSerializer(_RefusesUnenforcedFields):
    """A new token. ``allowed_ip_addresses`` is refused: IP allow-lists are not enforced."""

    description = serializers.CharField(max_length=255)
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When the token stops working (at least 10 minutes ahead); never if absent. "
        "It cannot be changed later.",
    )

    def validate_expires_at(self, value: datetime | None) -> datetime | None:
        if value is not None and value < timezone.now() + MIN_EXPIRY:
            raise serializers.ValidationError("Must be at least 10 minutes in the future.")
        return value


class AgentTokenUpdateSerializer(_RefusesUnenforcedFields):
    """PUT and PATCH both change only the description, if sent. The expiry cannot be changed,
    and ``allowed_ip_addresses`` is refused: IP allow-lists are not enforced."""

    refused = {
        **_RefusesUnenforcedFields.refused,
        "expires_at": "A token's expiry cannot be changed; create a new token instead.",
    }

    description = serializers.CharField(max_length=255, required=False)
