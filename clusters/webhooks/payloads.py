"""The platform's webhook deliveries as data: the headers that name them, the JSON body, and
the events this endpoint applies with their payloads, in Buildkite's REST shapes.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

from clusters.models import QUEUE_KEY_PATTERN, SLUG_PATTERN
from controlplane.api.parsers import json_loads

EVENT_HEADER = "X-Buildkite-Event"
DELIVERY_HEADER = "X-Buildkite-Delivery"


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a string (DRF's also takes numbers and booleans, meaning other ids)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class OrganizationPayload(serializers.Serializer):  # type: ignore[type-arg]
    slug = serializers.RegexField(SLUG_PATTERN, max_length=50)


class ClusterPayload(serializers.Serializer):  # type: ignore[type-arg]
    id = StrictUUIDField()
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    emoji = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=64)
    color = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=7)


class InstanceShapePayload(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=32)


class HostedAgentsPayload(serializers.Serializer):  # type: ignore[type-arg]
    instance_shape = InstanceShapePayload()


class QueuePayload(serializers.Serializer):  # type: ignore[type-arg]
    id = StrictUUIDField()
    key = serializers.RegexField(QUEUE_KEY_PATTERN, max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    hosted = serializers.BooleanField(required=False, default=False)
    hosted_agents = HostedAgentsPayload(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("hosted") and not attrs.get("hosted_agents"):
            raise serializers.ValidationError(
                {"hosted_agents": "A hosted queue needs hosted_agents.instance_shape."}
            )
        return attrs


class SenderPayload(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.CharField(required=False, allow_null=True)
    name = serializers.CharField(required=False, allow_null=True, allow_blank=True)


class ClusterEventPayload(serializers.Serializer):  # type: ignore[type-arg]
    event = serializers.CharField()
    organization = OrganizationPayload()
    cluster = ClusterPayload()
    sender = SenderPayload(required=False, allow_null=True)


class QueueEventPayload(ClusterEventPayload):
    queue = QueuePayload()


#: The events this endpoint applies, and the payload each carries.
EVENTS: dict[str, type[serializers.Serializer]] = {  # type: ignore[type-arg]
    "cluster_queue.created": QueueEventPayload,
    "cluster_queue.deleted": QueueEventPayload,
    "cluster.deleted": ClusterEventPayload,
}
#: Sent by the platform when a webhook's settings change; answered, never applied.
PING = "ping"


#: A delivery id: what senders use (UUIDs, numbers, dotted or dashed names), nothing that a
#: database column could refuse.
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def parse_body(body: bytes) -> dict[str, Any]:
    """The delivery's JSON object. Raises ``ValueError`` with a message for anything else: what
    the API's JSON reader refuses (not JSON, NaN or infinities, nested too deep:
    ``controlplane.api.parsers.json_loads``), a value that is not an object, or text the
    database cannot store (NUL, lone surrogates)."""
    payload = json_loads(body)
    if not isinstance(payload, dict):
        raise ValueError("it must be a JSON object")
    if _has_unstorable_text(payload):
        raise ValueError("it contains a NUL character or a lone surrogate")
    return payload


def _has_unstorable_text(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(_has_unstorable_text(k) or _has_unstorable_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_unstorable_text(item) for item in value)
    return False
