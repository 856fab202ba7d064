"""What every resource's serializers share, in Buildkite's conventions: ``graphql_id`` (base64
of ``<Type>---<uuid>``, as Buildkite's are), absolute URLs, ``null`` for blank text, and users as
Buildkite shows them.

Output serializers are ``ReadSerializer``s (``controlplane.api.serializers``); their URLs are
``Route``s, each reversed once per request and formatted per item (``controlplane.api.links``);
a user is rendered once per response however many items show them. A page of 100 items costs
little more than reading it.
"""

from __future__ import annotations

import hashlib
import uuid
from binascii import b2a_base64
from collections.abc import Mapping
from functools import cached_property
from typing import Any, overload

from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.api.fields import TimestampField
from controlplane.api.links import Formatter, links_for
from controlplane.api.serializers import ReadSerializer


def graphql_id(type_name: str, pk: uuid.UUID | int | str) -> str:
    # base64.b64encode's own call, without its Python wrapper: once an item of every list.
    return b2a_base64(f"{type_name}---{pk}".encode(), newline=False).decode()


def absolute(context: Mapping[str, Any], name: str, **kwargs: Any) -> str:
    """``request.build_absolute_uri(reverse(name, kwargs=kwargs))``, through the request's one
    ``Links`` (each route reversed once per request)."""
    return links_for(context["request"]).url(name, **kwargs)


class Route:
    """A serializer's link to route ``name``: ``self.<attribute>(**arguments)`` is its absolute
    URL, with the UUID arguments named in ``formatted`` (and, with ``organization``, the slug of
    the serializer's ``context["organization"]``). The route is reversed at its first use in a
    response; each item formats it."""

    def __init__(self, name: str, *formatted: str, organization: bool = False) -> None:
        self.name, self.formatted, self.organization = name, formatted, organization

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    def of(self, serializer: Any) -> Formatter:
        """The serializer's formatter (``from_columns``'s ``bind`` of a link)."""
        formatter: Formatter = self.__get__(serializer, type(serializer))
        return formatter

    @overload
    def __get__(self, serializer: None, owner: type) -> Route: ...

    @overload
    def __get__(self, serializer: object, owner: type) -> Formatter: ...

    def __get__(self, serializer: Any, owner: type) -> Route | Formatter:
        if serializer is None:
            return self
        context = serializer.context
        fixed = {"org_slug": context["organization"].slug} if self.organization else {}
        formatter = links_for(context["request"]).formatter(self.name, *self.formatted, **fixed)
        serializer.__dict__[self.attribute] = formatter  # the serializer's next reads find it
        return formatter


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


#: What ``UserSerializer`` never reads of a user: the lists leave these columns out of their
#: query (a page of 100 queues carries two users a row, each 11 columns, the password's hash
#: among them: the database writes and the process reads every one).
UNSHOWN_USER_FIELDS = ("password", "last_login", "is_superuser", "is_staff", "is_active")


def unshown_user_fields(*relations: str) -> list[str]:
    """``QuerySet.defer``'s names of ``UNSHOWN_USER_FIELDS`` of each related user."""
    return [f"{relation}__{name}" for relation in relations for name in UNSHOWN_USER_FIELDS]


class UserSerializer(ReadSerializer):
    """A user as Buildkite shows one (``created_by``, ``dispatch_paused_by``), rendered once per
    response: a page of 100 queues names the same few users."""

    PLAIN_JSON = True  # strings, booleans, None and integers only

    id = serializers.SerializerMethodField()
    graphql_id = serializers.SerializerMethodField()
    name = serializers.SerializerMethodField()
    email = serializers.SerializerMethodField()
    avatar_url = serializers.SerializerMethodField()
    created_at = TimestampField(source="date_joined")

    @cached_property
    def _rendered(self) -> dict[Any, dict[str, Any]]:
        return {}

    def to_representation(self, user: User) -> dict[str, Any]:
        rendered = self._rendered.get(user.pk)
        if rendered is None:
            rendered = self._rendered[user.pk] = super().to_representation(user)
        return rendered

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
