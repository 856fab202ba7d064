"""``GET /v2/organizations/{org}/audit_events``: the organization's audit log (``clusters.audit``),
newest first, in Buildkite's shape, with cursor pagination and filters (scope
``read_audit_events``); ``.../audit_events/{uuid}`` is one event.

Cursor pagination as Buildkite's newer endpoints have it: ``?after=`` (older events) or
``?before=`` (newer ones; not both), ``?per_page=``; the body is ``{"items": [...], "links":
{...}}`` and the ``Link`` header carries the same ``next``, ``prev`` and ``first``. A cursor is
opaque: the position of an event in the order (``occurred_at``, ``uuid``), so events recorded
while a client pages never shift its pages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_field, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from clusters.api.base import OrganizationAPIView, get_or_404
from clusters.api.serializers.common import absolute
from clusters.audit import ActorType, AuditEvent
from clusters.models import ApiScope
from controlplane.api.fields import TimestampField
from controlplane.api.openapi import operation

TAGS = ["Audit events"]
#: What ``type`` and ``subject_type`` look like (``CLUSTER_QUEUE_CREATED``).
_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
#: An id as the audit log stores one: printable, no control characters.
_ID = re.compile(r"[^\x00-\x1f\x7f]{1,255}")


class _Party(serializers.Serializer):  # type: ignore[type-arg]
    type = serializers.CharField()
    uuid = serializers.CharField(allow_null=True)
    name = serializers.CharField(allow_null=True)


class AuditEventSerializer(serializers.Serializer):  # type: ignore[type-arg]
    uuid = serializers.UUIDField(read_only=True)
    type = serializers.CharField(read_only=True)
    occurred_at = TimestampField()
    actor = serializers.SerializerMethodField()
    subject = serializers.SerializerMethodField()
    # The metaclass takes declared fields off the class: these do not hide ``self.context``.
    context = serializers.JSONField(read_only=True)  # type: ignore[assignment]
    data = serializers.JSONField(read_only=True)  # type: ignore[assignment]
    url = serializers.SerializerMethodField()

    @extend_schema_field(_Party)
    def get_actor(self, event: AuditEvent) -> dict[str, Any]:
        return _party(event.actor_type, event.actor_uuid, event.actor_name)

    @extend_schema_field(_Party)
    def get_subject(self, event: AuditEvent) -> dict[str, Any]:
        return _party(event.subject_type, event.subject_uuid, event.subject_name)

    def get_url(self, event: AuditEvent) -> str:
        context = self._context  # the serializer's context (``context`` is the field)
        return absolute(
            context,
            "api:audit-event",
            org_slug=context["organization"].slug,
            event_uuid=event.uuid,
        )


def _party(type: str, uuid: str, name: str) -> dict[str, Any]:
    return {"type": type, "uuid": uuid or None, "name": name or None}


AuditEventPageSerializer = inline_serializer(
    "AuditEventPage",
    {
        "items": AuditEventSerializer(many=True),
        "links": serializers.DictField(child=serializers.CharField()),
    },
)


def _text(name: str, description: str, **kwargs: Any) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.QUERY, description=description, **kwargs)


FILTERS = [
    _text("type", "Only events of this type (`CLUSTER_CREATED`, ...)."),
    _text("subject_type", "Only events about this kind of subject (`CLUSTER`, `REGISTRY`, ...)."),
    _text("subject_uuid", "Only events about this subject."),
    _text("actor_type", "Only events by this kind of actor.", enum=list(ActorType.values)),
    _text("actor_uuid", "Only events by this actor (an API token's or a user's id, ...)."),
    OpenApiParameter(
        "occurred_after", OpenApiTypes.DATETIME, description="Only events at or after this time."
    ),
    OpenApiParameter(
        "occurred_before", OpenApiTypes.DATETIME, description="Only events before this time."
    ),
    _text("after", "The cursor of the next page (its `next` link)."),
    _text("before", "The cursor of the previous page (its `prev` link)."),
    OpenApiParameter(
        "per_page",
        {"type": "integer", "minimum": 1},
        description=f"Events per page: {settings.API_PAGE_SIZE} by default, at most "
        f"{settings.API_MAX_PAGE_SIZE}.",
    ),
]


def _header_link() -> OpenApiParameter:
    return OpenApiParameter(
        "Link",
        str,
        OpenApiParameter.HEADER,
        response=[200],
        description='The next, prev and first pages (rel="next", ...), as in the body\'s links.',
    )


class AuditEventListView(OrganizationAPIView):
    read_scope = ApiScope.READ_AUDIT_EVENTS

    @operation(
        "audit_events_list",
        tags=TAGS,
        description="The organization's audit log, newest first: every write through the "
        "API, the console, the webhook and commands, with who made it. Cursor pagination.",
        responses={200: AuditEventPageSerializer},
        query=[*FILTERS, _header_link()],
    )
    def get(self, request: Request, org_slug: str) -> Response:
        events = filtered(AuditEvent.objects.filter(organization=self.organization), request)
        page = CursorPage(request)
        items = page.fetch(events)
        data = AuditEventSerializer(items, many=True, context=self.serializer_context()).data
        return page.response({"items": data, "links": page.links})


class AuditEventDetailView(OrganizationAPIView):
    read_scope = ApiScope.READ_AUDIT_EVENTS

    @operation("audit_events_get", tags=TAGS, responses={200: AuditEventSerializer})
    def get(self, request: Request, org_slug: str, event_uuid: str) -> Response:
        events = AuditEvent.objects.filter(organization=self.organization)
        event = get_or_404(events, event_uuid, "No audit event found")
        return self.respond(AuditEventSerializer, event)


def filtered(events: QuerySet[AuditEvent], request: Request) -> QuerySet[AuditEvent]:
    """``events`` narrowed by the request's filters; a malformed one is a 400 naming it."""
    params = request.GET
    for name, pattern in (
        ("type", _NAME),
        ("subject_type", _NAME),
        ("subject_uuid", _ID),
        ("actor_uuid", _ID),
    ):
        value = params.get(name)
        if value is not None:
            if not pattern.fullmatch(value):
                raise exceptions.ParseError(f"{name} {value!r} is not a valid {name}.")
            events = events.filter(**{name: value})
    actor_type = params.get("actor_type")
    if actor_type is not None:
        if actor_type not in ActorType.values:
            raise exceptions.ParseError(
                f"actor_type must be one of {', '.join(ActorType.values)}, not {actor_type!r}."
            )
        events = events.filter(actor_type=actor_type)
    for name, lookup in (("occurred_after", "gte"), ("occurred_before", "lt")):
        raw = params.get(name)
        if raw is not None:
            events = events.filter(**{f"occurred_at__{lookup}": _time(name, raw)})
    return events


def _time(name: str, raw: str) -> dt.datetime:
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None:
        raise exceptions.ParseError(
            f"{name} must be an ISO 8601 time (2025-01-31T12:00:00Z), not {raw!r}."
        )
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class CursorPage:
    """One page of events in (``occurred_at``, ``uuid``) order, newest first, from the
    request's ``after`` or ``before`` cursor, and the links around it."""

    def __init__(self, request: Request) -> None:
        self.request = request
        params = request.GET
        after, before = params.get("after"), params.get("before")
        if after is not None and before is not None:
            raise exceptions.ParseError("Send after or before, not both.")
        self.direction = "before" if before is not None else "after"
        self.cursor = _decode(self.direction, before if before is not None else after)
        self.per_page = min(_per_page(params.get("per_page")), settings.API_MAX_PAGE_SIZE)
        self.links: dict[str, str] = {}

    def fetch(self, events: QuerySet[AuditEvent]) -> list[AuditEvent]:
        """The page's events, newest first; one query (a row more than the page, to know
        whether there is more beyond it)."""
        if self.direction == "after":
            if self.cursor is not None:
                at, pk = self.cursor
                events = events.filter(Q(occurred_at__lt=at) | Q(occurred_at=at, uuid__lt=pk))
            rows = list(events.order_by("-occurred_at", "-uuid")[: self.per_page + 1])
            more_older, more_newer = len(rows) > self.per_page, self.cursor is not None
            rows = rows[: self.per_page]
        else:
            assert self.cursor is not None  # noqa: S101 - _decode gives one for "before"
            at, pk = self.cursor
            events = events.filter(Q(occurred_at__gt=at) | Q(occurred_at=at, uuid__gt=pk))
            rows = list(events.order_by("occurred_at", "uuid")[: self.per_page + 1])
            more_newer, more_older = len(rows) > self.per_page, True
            rows = rows[: self.per_page][::-1]
        url = self.request.build_absolute_uri()
        base = remove_query_param(remove_query_param(url, "after"), "before")
        self.links["self"] = url
        if rows and more_older:
            self.links["next"] = replace_query_param(base, "after", _encode(rows[-1]))
        if rows and more_newer:
            self.links["prev"] = replace_query_param(base, "before", _encode(rows[0]))
        if self.cursor is not None:
            self.links["first"] = base
        return rows

    def response(self, data: dict[str, Any]) -> Response:
        header = ", ".join(
            f'<{link}>; rel="{rel}"' for rel, link in self.links.items() if rel != "self"
        )
        return Response(data, headers={"Link": header} if header else None)


def _per_page(raw: str | None) -> int:
    if raw is None or raw == "":
        return int(settings.API_PAGE_SIZE)
    if not raw.isdigit() or int(raw) < 1:
        raise exceptions.ParseError(f"per_page must be a positive integer, not {raw!r}.")
    return int(raw)


def _encode(event: AuditEvent) -> str:
    position = f"{event.occurred_at.isoformat()}|{event.uuid}"
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def _decode(name: str, cursor: str | None) -> tuple[dt.datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, pk = text.split("|")
        occurred_at = dt.datetime.fromisoformat(at)
        if occurred_at.tzinfo is None:
            raise ValueError(at)
        return occurred_at, uuid.UUID(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise exceptions.ParseError(
            f"{name} is not a cursor this endpoint gave: use the links of a page."
        ) from None
