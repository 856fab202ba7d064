"""Reads of a registry's usage and inventory (``registries.inventory``), for the REST API and the
console: the usage per day as a series with no gaps, the repositories in a chosen order, the
largest ones, a repository's tags."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import F, QuerySet

from registries.inventory import Repository, Tag, UsageDay
from registries.models import Registry, RegistryQuerySet

#: ``?days=`` of the usage: by default and at most.
DEFAULT_DAYS, MAX_DAYS = 30, 365
#: ``?sort=`` of the repositories, and the order each means (ties by name).
REPOSITORY_ORDERS = {
    "name": (F("name").asc(),),
    "bytes": (F("bytes").desc(), F("name").asc()),
    "last_push": (F("last_push_at").desc(nulls_last=True), F("name").asc()),
}
#: How many repositories the console's "largest" lists.
LARGEST = 10


@dataclass(frozen=True)
class UsagePoint:
    """One day of a registry's use: pushes and pulls that day, and its storage at the day's last
    figure, carried over from the day before when none was taken (None before the first)."""

    day: date
    pushes: int
    pulls: int
    bytes: int | None


def usage_days(registry: Registry, *, days: int, today: date) -> list[UsagePoint]:
    """The ``days`` days up to ``today``, oldest first, one point each (two queries: the days
    in the window, and the last storage figure before it)."""
    first = today - timedelta(days=days - 1)
    whole = UsageDay.objects.filter(registry=registry, repository="")
    rows = {row.day: row for row in whole.filter(day__gte=first, day__lte=today).order_by("day")}
    storage = (
        whole.filter(day__lt=first, bytes__isnull=False)
        .order_by("-day")
        .values_list("bytes", flat=True)
        .first()
    )
    points = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = rows.get(day)
        if row is not None and row.bytes is not None:
            storage = row.bytes
        pushes, pulls = (row.pushes, row.pulls) if row is not None else (0, 0)
        points.append(UsagePoint(day=day, pushes=pushes, pulls=pulls, bytes=storage))
    return points


def repositories_sorted(registry: Registry, sort: str = "name") -> QuerySet[Repository]:
    """The registry's repositories in the order ``sort`` names (``REPOSITORY_ORDERS``)."""
    return Repository.objects.filter(registry=registry).order_by(*REPOSITORY_ORDERS[sort])


def largest_repositories(registry: Registry, limit: int = LARGEST) -> list[Repository]:
    """The ``limit`` largest repositories (the index ``repository_largest``)."""
    return list(repositories_sorted(registry, "bytes")[:limit])


def repository_tags(registry: Registry, repository: str) -> QuerySet[Tag]:
    """The tags of ``repository`` (its full name), newest push first."""
    return Tag.objects.filter(repository__registry=registry, repository__name=repository).order_by(
        "-pushed_at", "name"
    )


def registries_usage_scan_due(*, now: datetime) -> RegistryQuerySet:
    """Ready registries due for a usage scan, longest due first (the partial index
    ``registry_usage_scan_due``)."""
    return (
        Registry.objects.ready()
        .filter(usage_scan_due_at__lte=now)
        .order_by("usage_scan_due_at", "pk")
    )
