"""Admin plumbing shared by the apps: creations go through services, not ``Model.save``; the
console's brand title; durations and sizes shown as people read them (``controlplane.humanize``),
never as ``0:00:00.010872``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from controlplane import humanize

#: The console's name, in its header, its pages' titles and its index.
BRAND = "Cluster registry control plane"
admin.site.site_header = BRAND
admin.site.site_title = BRAND
admin.site.index_title = "Console"


def _shown(
    field: str, description: str | None, render: Callable[[Any], str]
) -> Callable[[Any, Any], str]:
    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def show(model_admin: Any, obj: Any) -> str:
        return render(getattr(obj, field))

    return show


def shown_duration(field: str, description: str | None = None) -> Callable[[Any, Any], str]:
    """A display method for the duration ``field`` (``4.5 s``), to use in place of the field in
    ``list_display`` and ``fields``: ``took = shown_duration("duration")``."""
    return _shown(field, description, humanize.duration)


def shown_size(field: str, description: str | None = None) -> Callable[[Any, Any], str]:
    """A display method for the size in bytes ``field`` (``10.2 GB``)."""
    return _shown(field, description, humanize.size)


def adopt(obj: models.Model, created: models.Model) -> None:
    """Make the admin's unsaved ``obj`` the row a service ``created``, so that the admin's log
    entry and redirect after "add" point at it."""
    obj.__dict__.update(created.__dict__)


class NoDeleteAdmin(admin.ModelAdmin[Any]):
    """For rows whose deletion has consequences a service must handle (a cluster's registry, a
    token's record): the admin offers no delete until that service exists."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """For rows that only the system writes: operators may look, never add, edit or delete.

    ``shown_as`` maps a field to the display method shown in its place on the row's page (a
    duration or a size, humanized: ``shown_duration``, ``shown_size``)."""

    shown_as: ClassVar[dict[str, str]] = {}

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            self.shown_as.get(name, name) if isinstance(name, str) else name
            for name in super().get_fields(request, obj)
        ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyTabularInline(admin.TabularInline[Any, Any]):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
