"""What every resource's serializers share, in Buildkite's conventions: ``graphql_id`` (base64
of ``<Type>---<uuid>``, as Buildkite's are), absolute URLs, ``null`` for blank text, and users as
Buildkite shows them.

Output serializers are ``ReadSerializer``s (``controlplane.api.serializers``), and ``absolute``
reverses each route once per response (``controlplane.api.links``): a page of 100 items costs
little more than its query.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.api.fields import TimestampField
from controlplane.api.links import Links
from controlplane.api.serializers import ReadSerializer


def graphql_id(type_name: str, pk: uuid.UUID | int) -> str:
    return base64.b64encode(f"{type_name}---{pk}".encode()).decode()


def absolute(context: Mapping[str, Any], name: str, **kwargs: Any) -> str:
    """``request.build_absolute_uri(reverse(name, kwargs=kwargs))``, through the request's one
    ``Links`` (each route reversed once per request)."""
    request = context["request"]
    links: Links | None = getattr(request, "_links", None)
    if links is None:
        links = request._links = Links(request)
    return links.url(name, **kwargs)


def blank_nulls(attrs: dict[str, Any], *names: str) -> dict[str, Any]:
    """A ``null`` sent for a text field means "empty", which the models store as ""."""
    for name in names:
        if name in attrs and attrs[name] is None:
            attrs[name] = ""
    return attrs


@extend_schema_field({"type": "boolean"})
class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false``, nothing else: DRF's ``BooleanField`` would also take
    ``"yes"``, ``"1"`` or ``0``, and a flag set by accident is worse than a 422."""

    default_error_messages = {
        "invalid": "Must be a boolean (true or false).",
        "null": "Must be a boolean (true or false).",
    }

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class UserSerializer(ReadSerializer):
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
