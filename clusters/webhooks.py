"""Verifying and reading the platform's webhook deliveries (Buildkite's scheme).

A delivery is verified with one of the organization's active webhook secrets, in either of
Buildkite's two modes:

- ``X-Buildkite-Signature: timestamp=<unix seconds>,signature=<hex HMAC-SHA256>`` of
  ``"<timestamp>.<raw body>"``, refused when the timestamp is more than five minutes away;
- ``X-Buildkite-Token: <secret>``, the secret itself (no timestamp: only the delivery id and
  idempotent events stop a replay).

Comparisons are constant-time. Secrets are derived from each ``WebhookSecret.salt`` with the
service's key and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.crypto import salted_hmac
from rest_framework import serializers

from clusters.models import (
    QUEUE_KEY_PATTERN,
    SLUG_PATTERN,
    WebhookSecret,
)

SECRET_PREFIX = "bkwh_"  # noqa: S105 - a marker for secret scanners, not a secret
SIGNATURE_HEADER = "X-Buildkite-Signature"
TOKEN_HEADER = "X-Buildkite-Token"  # noqa: S105 - a header name
EVENT_HEADER = "X-Buildkite-Event"
DELIVERY_HEADER = "X-Buildkite-Delivery"
#: How far a signature's timestamp may be from now, either way.
TOLERANCE_SECONDS = 300
_SIGNATURE = re.compile(
    r"^timestamp=(?P<timestamp>\d{1,12}),signature=(?P<signature>[0-9a-f]{64})$"
)


class WebhookRefused(Exception):
    """The delivery is not accepted; ``status`` and ``message`` are the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_salt() -> str:
    return secrets.token_hex(32)


def secret_for(salt: str) -> str:
    """The secret of a ``WebhookSecret`` with this salt, derived with the service's key."""
    digest = salted_hmac(
        "clusters.webhooks.secret", salt, secret=settings.SECRET_KEY, algorithm="sha256"
    )
    return SECRET_PREFIX + digest.hexdigest()[:48]


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Buildkite-Signature`` value for ``body`` at ``timestamp``."""
    return f"timestamp={timestamp},signature={_digest(secret, timestamp, body)}"


@dataclass(frozen=True)
class Verified:
    secret: WebhookSecret
    method: str  # "signature" or "token"
    signature: str | None = None  # the HMAC, in signature mode


def verify(org_slug: str, headers: Any, body: bytes, now: float) -> Verified:
    """Which active secret of the organization ``org_slug`` vouches for this delivery (its
    ``organization`` loaded with it); raises ``WebhookRefused`` (401) otherwise. An unknown
    organization is refused the same way as a wrong secret, so the endpoint does not tell which
    organizations exist. A slug that cannot exist is looked up nowhere."""
    candidates = (
        list(
            WebhookSecret.objects.active()
            .filter(organization__slug=org_slug)
            .select_related("organization")
        )
        if re.fullmatch(SLUG_PATTERN, org_slug)
        else []
    )
    signature, token = headers.get(SIGNATURE_HEADER), headers.get(TOKEN_HEADER)
    if signature:
        match = _SIGNATURE.match(signature.strip())
        if match is None:
            raise WebhookRefused(
                401, f"Malformed {SIGNATURE_HEADER}: expected timestamp=<unix seconds>,"
                "signature=<hex HMAC-SHA256>."
            )  # fmt: skip
        timestamp = int(match["timestamp"])
        if abs(now - timestamp) > TOLERANCE_SECONDS:
            raise WebhookRefused(
                401,
                f"The signature's timestamp is {abs(now - timestamp):.0f} seconds away from now; "
                f"deliveries more than {TOLERANCE_SECONDS} seconds old (or ahead) are refused.",
            )
        for candidate in candidates:
            expected = _digest(secret_for(candidate.salt), timestamp, body)
            if hmac.compare_digest(expected, match["signature"]):
                return Verified(candidate, "signature", match["signature"])
        raise WebhookRefused(401, "Invalid signature.")
    if token:
        offered = token.strip().encode("utf-8", "backslashreplace")  # any text: compare bytes
        for candidate in candidates:
            if hmac.compare_digest(secret_for(candidate.salt).encode(), offered):
                return Verified(candidate, "token")
        raise WebhookRefused(401, "Invalid token.")
    raise WebhookRefused(
        401, f"Sign the delivery ({SIGNATURE_HEADER}) or send the webhook token ({TOKEN_HEADER})."
    )


# --- payloads, in Buildkite's REST shapes -------------------------------------------------------


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
    """The delivery's JSON object. Raises ``ValueError`` with a message for anything else: not
    JSON, nested too deep, NaN or infinities (not JSON, though Python reads them), a value that
    is not an object, or text the database cannot store (NUL, lone surrogates)."""

    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON value")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{text} is too large for a number")
        return value

    try:
        payload = json.loads(body, parse_constant=refuse_constant, parse_float=finite)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
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
