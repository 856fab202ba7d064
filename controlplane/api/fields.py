"""Serializer fields and helpers every app's REST API shares, in Buildkite's conventions.

Timestamps are ISO 8601 UTC with milliseconds (``2023-05-03T04:17:55.867Z``); a text field a
model stores blank is ``null`` in a response (``empty_to_none``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


def timestamp(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    # What the database gives is in UTC already (USE_TZ): no conversion to make.
    utc = value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)
    if utc.year < 1000:  # strftime writes such a year unpadded; keep its text
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    # strftime's text, by the faster isoformat (which ends "+00:00" for UTC)
    return utc.isoformat(timespec="milliseconds")[:-6] + "Z"


@extend_schema_field(OpenApiTypes.DATETIME)
class TimestampField(serializers.Field):  # type: ignore[type-arg]
    #: Its rendering depends on the value alone (``controlplane.api.serializers.SHARED_FIELDS``).
    renders_value_only = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: dt.datetime) -> str | None:
        return timestamp(value)


def empty_to_none(value: str) -> str | None:
    return value or None
