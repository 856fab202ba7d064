"""The console's usage page of a registry (``/admin/registries/registry/<id>/usage/``, linked from
the registry's page): storage over time and pushes and pulls per day as inline SVG charts drawn
here (no script, nothing fetched), the largest repositories, and usage against the quota. And
the inventory's rows, read-only, with their sizes humanized.

Storage per day is ``UsageDay.bytes`` as ``registries.usage_selectors.usage_days`` carries it
over; the charts scale to the window's largest figure."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from controlplane import humanize
from controlplane.admin import ReadOnlyAdmin, shown_size
from registries.inventory import Manifest, RegistryNotification, Repository, Tag, UsageDay
from registries.models import Registry
from registries.quotas import QuotaStatus, quota_status
from registries.usage_selectors import (
    DEFAULT_DAYS,
    MAX_DAYS,
    UsagePoint,
    largest_repositories,
    usage_days,
)

#: The charts' drawing area, in SVG user units (the SVG scales to the page's width).
WIDTH, HEIGHT, LEFT, BOTTOM = 720, 160, 70, 20
STORAGE_COLOUR, PUSH_COLOUR, PULL_COLOUR = "#0d6efd", "#198754", "#6c757d"


def _x(index: int, count: int) -> float:
    return LEFT + (WIDTH - LEFT) * (index / max(count - 1, 1))


def _y(value: int, top: int) -> float:
    return HEIGHT - BOTTOM - (HEIGHT - BOTTOM - 10) * (value / top if top else 0)


def _frame(
    points: Sequence[UsagePoint], top_label: str, body: SafeString, label: str
) -> SafeString:
    """The SVG around a chart: its axes, the top value and the first and last days."""
    return format_html(
        '<svg class="usage-chart" viewBox="0 0 {w} {h}" width="100%" role="img" '
        'aria-label="{label}" xmlns="http://www.w3.org/2000/svg" '
        'style="max-width:{w}px;font:11px sans-serif">'
        '<line x1="{left}" y1="{base}" x2="{w}" y2="{base}" stroke="#999"/>'
        '<line x1="{left}" y1="10" x2="{left}" y2="{base}" stroke="#999"/>'
        '<text x="{tx}" y="14" text-anchor="end">{top}</text>'
        '<text x="{tx}" y="{base}" text-anchor="end">0</text>'
        '<text x="{left}" y="{h}" >{first}</text>'
        '<text x="{w}" y="{h}" text-anchor="end">{last}</text>{body}</svg>',
        w=WIDTH,
        h=HEIGHT,
        left=LEFT,
        base=HEIGHT - BOTTOM,
        tx=LEFT - 4,
        top=top_label,
        first=points[0].day.isoformat() if points else "",
        last=points[-1].day.isoformat() if points else "",
        body=body,
        label=label,
    )


def storage_chart(points: Sequence[UsagePoint]) -> SafeString:
    """Storage over the days: a line with its area, a dot a day (its figure on hover)."""
    top = max((p.bytes or 0 for p in points), default=0)
    # Days before the first figure have none: the line starts at the first.
    known = [(i, p) for i, p in enumerate(points) if p.bytes is not None]
    coords = [(_x(i, len(points)), _y(p.bytes or 0, top)) for i, p in known]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    base = HEIGHT - BOTTOM
    area = f"{coords[0][0]:.1f},{base} {line} {coords[-1][0]:.1f},{base}" if coords else ""
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{}: {}</title></circle>',
        (
            (f"{x:.1f}", f"{y:.1f}", STORAGE_COLOUR, p.day.isoformat(), humanize.size(p.bytes))
            for (x, y), (_, p) in zip(coords, known, strict=True)
        ),
    )
    body = format_html(
        '<polygon points="{}" fill="{}" fill-opacity="0.15"/>'
        '<polyline class="storage-line" points="{}" fill="none" stroke="{}" stroke-width="2"/>{}',
        area,
        STORAGE_COLOUR,
        line,
        STORAGE_COLOUR,
        dots,
    )
    return _frame(points, humanize.size(top), body, "Storage over time")


def activity_chart(points: Sequence[UsagePoint]) -> SafeString:
    """Pushes and pulls a day, side by side."""
    top = max((max(p.pushes, p.pulls) for p in points), default=0)
    slot = (WIDTH - LEFT) / max(len(points), 1)
    bar = max(slot / 2 - 1, 1)
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} {}</title></rect>',
        (
            (
                f"{LEFT + i * slot + offset:.1f}",
                f"{_y(count, top):.1f}",
                f"{bar:.1f}",
                f"{HEIGHT - BOTTOM - _y(count, top):.1f}",
                colour,
                p.day.isoformat(),
                count,
                what,
            )
            for i, p in enumerate(points)
            for offset, count, colour, what in (
                (0, p.pushes, PUSH_COLOUR, "pushes"),
                (bar, p.pulls, PULL_COLOUR, "pulls"),
            )
            if count
        ),
    )
    return _frame(points, str(top), bars, "Pushes and pulls per day")


def _days(request: HttpRequest) -> int:
    raw = request.GET.get("days", "")
    return min(int(raw), MAX_DAYS) if raw.isdigit() and int(raw) > 0 else DEFAULT_DAYS


def usage_view(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, object_id: str
) -> HttpResponse:
    """The usage page of registry ``object_id`` (``?days=``, 30 by default)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    registry = (
        Registry.objects.select_related("cluster__organization").filter(pk=object_id).first()
        if _is_uuid(object_id)
        else None
    )
    if registry is None:
        raise Http404("No registry found")
    days = _days(request)
    points = usage_days(registry, days=days, today=timezone.now().date())
    namespace = f"{registry.namespace}/"
    return TemplateResponse(
        request,
        "admin/registries/registry/usage.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "original": registry,
            "title": f"Usage of {registry.namespace}",
            "registry": registry,
            "days": days,
            "points": points,
            "active_days": [p for p in reversed(points) if p.pushes or p.pulls],
            "storage_chart": storage_chart(points),
            "activity_chart": activity_chart(points),
            "largest": [
                (repository, repository.name.removeprefix(namespace))
                for repository in largest_repositories(registry)
            ],
            "quota": _quota(registry),
        },
    )


def _quota(registry: Registry) -> QuotaStatus:
    """The registry's usage against the quota that applies to it (one query)."""
    return quota_status(registry)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- the inventory, read-only (the notifications and the usage scan write it) -----------------


@admin.register(Repository)
class RepositoryAdmin(ReadOnlyAdmin):
    list_display = ["name", "size", "tag_count", "last_push_at", "last_pull_at", "registry"]
    list_select_related = ["registry"]
    search_fields = ["name"]
    ordering = ["-bytes", "name"]
    shown_as = {"bytes": "size"}
    size = shown_size("bytes", "size")


@admin.register(Tag)
class TagAdmin(ReadOnlyAdmin):
    list_display = ["name", "repository", "digest", "size", "pushed_at", "last_pulled_at"]
    list_select_related = ["repository"]
    search_fields = ["name", "digest", "repository__name"]
    shown_as = {"bytes": "size"}
    size = shown_size("bytes", "size")


@admin.register(Manifest)
class ManifestAdmin(ReadOnlyAdmin):
    list_display = ["digest", "registry", "media_type", "own_size", "complete", "created_at"]
    list_select_related = ["registry"]
    search_fields = ["digest"]
    shown_as = {"size": "own_size"}
    own_size = shown_size("size", "size")


@admin.register(UsageDay)
class UsageDayAdmin(ReadOnlyAdmin):
    list_display = ["day", "registry", "repository", "pushes", "pulls", "storage"]
    list_select_related = ["registry"]
    list_filter = ["day"]
    search_fields = ["repository", "registry__namespace"]
    shown_as = {"bytes": "storage"}
    storage = shown_size("bytes", "storage")


@admin.register(RegistryNotification)
class RegistryNotificationAdmin(ReadOnlyAdmin):
    """The registry's events as they arrived (docs/usage.md, "Registry events"): what was applied
    and what is waiting."""

    list_display = ["received_at", "action", "repository", "registry", "occurred_at", "applied_at"]
    list_select_related = ["registry"]
    list_filter = ["action", ("applied_at", admin.EmptyFieldListFilter)]
    search_fields = ["id", "repository"]
    date_hierarchy = "received_at"
    ordering = ["-received_at"]
