"""Page-number pagination as Buildkite's REST API has it: ``?page=`` (from 1) and ``?per_page=``
(default 30, at most 100); the body is a bare JSON array, and the ``Link`` header carries the
``next``, ``prev``, ``first`` and ``last`` pages.

A page and the total it needs for ``last`` are one query: the page's rows carry the count of
the whole list (``COUNT(*) OVER ()``). Only a page past the end, which has no row to carry it,
counts apart. ``paginate_compiled`` does the same with a ``CompiledPage`` (the query compiled
once, its rows read as ``RowView``s: ``controlplane.api.pages``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db.models import Count, Window
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from controlplane.api.pages import TOTAL, CompiledPage, Fetched

#: Pages starting beyond this offset are empty without asking the database (which refuses
#: offsets past a 64-bit integer).
MAX_OFFSET = 2**62


def _positive_int(request: Request | HttpRequest, name: str, default: int) -> int:
    raw = request.GET.get(name)  # a REST framework Request passes it on: its query_params
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise exceptions.ParseError(f"{name} must be a positive integer, not {raw!r}.")
    return value


class LinkHeaderPagination(BasePagination):
    page_query_param = "page"
    page_size_query_param = "per_page"

    def paginate_queryset(
        self, queryset: Any, request: Request | HttpRequest, view: Any = None
    ) -> list[Any]:
        start = self._read_page(request)
        page: list[Any] = []
        if start <= MAX_OFFSET:  # beyond, past any end (and too large for the database)
            counted = queryset.annotate(**{TOTAL: Window(Count("*"))})
            page = list(counted[start : start + self.per_page])
        # An empty first page is an empty list; an empty later page, past its end, counts it.
        self.count: int = getattr(page[0], TOTAL) if page else queryset.count() if start else 0
        return page

    def paginate_compiled(
        self, compiled: CompiledPage[Any], values: Sequence[Any], request: Request | HttpRequest
    ) -> Fetched:
        """``paginate_queryset`` for the list ``compiled(*values)`` (``CompiledPage``): the
        same page (its rows, their ``RowView``s built when asked for) and count, by the SQL
        compiled once."""
        start = self._read_page(request)
        page, total = Fetched((), []), None
        if start <= MAX_OFFSET:
            page, total = compiled.fetch(*values, offset=start, limit=self.per_page)
        self.count = total if total is not None else compiled.count(*values) if start else 0
        return page

    def _read_page(self, request: Request | HttpRequest) -> int:
        """Read ``?per_page=`` and ``?page=``; the offset of the page's first row."""
        self.request = request
        self.per_page = min(
            _positive_int(request, self.page_size_query_param, settings.API_PAGE_SIZE),
            settings.API_MAX_PAGE_SIZE,
        )
        self.page = _positive_int(request, self.page_query_param, 1)
        return (self.page - 1) * self.per_page

    @property
    def last_page(self) -> int:
        return max(1, math.ceil(self.count / self.per_page))

    def links(self) -> list[tuple[str, int]]:
        pages: list[tuple[str, int]] = []
        if self.page < self.last_page:
            pages.append(("next", self.page + 1))
        if self.page > 1:
            pages.append(("prev", min(self.page - 1, self.last_page)))
            pages.append(("first", 1))
        if self.page != self.last_page:
            pages.append(("last", self.last_page))
        return pages

    def get_paginated_response(self, data: Sequence[Any]) -> Response:
        links = self.links()
        if not links:  # one page: no header, and no URL to build (~20 µs a list)
            return Response(data)
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.page_size_query_param, self.per_page)
        header = ", ".join(
            f'<{replace_query_param(url, self.page_query_param, page)}>; rel="{rel}"'
            for rel, page in links
        )
        return Response(data, headers={"Link": header})
