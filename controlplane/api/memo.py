"""A list item's JSON, memoized by what it is rendered from: ``render_items``.

An item of a compiled page (``controlplane.api.pages``) is a pure function of its row (the
listed model's columns and those of its ``select_related`` rows: the SQL's whole row, as
``Fetched.rows`` holds it), of the serializer class, and of what its links are built from (the
request's scheme, host and script prefix, the URLconf, the organization's slug). Rendering 100
items through their serializer took ~1 ms of CPU in-process, about a third of a 100-item page;
the same rows are asked for again and again (a dashboard polling its clusters), so the items'
bytes are kept, keyed by all of the above, and embedded in the page as ``orjson.Fragment``s,
which orjson writes as they are (``controlplane.api.renderers``).

A page asked for again is one lookup, keyed by all its rows (``MAXPAGES`` pages, holding the
items' own ``Fragment``s), and builds no ``RowView``: building them took ~0.3 ms of a 100-item
page's ~2 ms in-process. A page with misses builds them and renders only the missing items.

Nothing needs invalidating: a changed row (or organization slug, or host) is another key, and
the old entry ages out. The memo is a bounded per-process LRU (``MAXSIZE`` items, ~1-2 KB
each with its key), written by hand as ``controlplane.hotcache`` is (an ``OrderedDict`` behind
one lock, taken twice a page at most): ``functools.lru_cache`` keys a function's arguments,
while an item is rendered from its ``RowView`` and the serializer, which are not part of the
key, and a page's misses are rendered together, through the serializer, as before. A row
whose values do not hash (a JSON column) or an item orjson would not write as the REST
framework does leaves the page to the serializer, unmemoized.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, cast

import orjson
from django.urls import get_script_prefix, get_urlconf

from controlplane.api.pages import Fetched
from controlplane.api.renderers import ORJSON_OPTIONS, PlainJSON, refuse

#: Items kept per process: 20 pages of 100.
MAXSIZE = 2048
#: Whole pages kept per process: each the tuple of its items' (shared) ``Fragment``s, keyed by
#: its rows, so that a page asked for again is one lookup rather than one an item.
MAXPAGES = 64

_items: OrderedDict[Hashable, orjson.Fragment] = OrderedDict()
_pages: OrderedDict[Hashable, tuple[orjson.Fragment, ...]] = OrderedDict()
_lock = threading.Lock()


def render_items(
    serializer_class: type, page: Fetched, context: Mapping[str, Any]
) -> PlainJSON | None:
    """``page``'s items as ``serializer_class(page.views(), many=True, context=context)``
    renders them, as ``orjson.Fragment``s from the memo where it has them (its ``RowView``s
    are built only for the items it has not); None where the page is not for the memo (read by
    the ORM, a row that does not hash, an item orjson refuses), which the caller then renders
    as before."""
    rows = page.rows
    if rows is None:
        return None
    request = context["request"]
    site = (
        serializer_class,
        request.scheme,
        request.get_host(),
        get_script_prefix(),
        get_urlconf(),
        context["organization"].slug,
    )
    page_key = (site, rows)
    try:
        with _lock:
            items = _pages.get(page_key)
            if items is not None:
                _pages.move_to_end(page_key)
                return PlainJSON(items)
            keys = [(site, row) for row in rows]
            found = [_items.get(key) for key in keys]
            for key, item in zip(keys, found, strict=True):
                if item is not None:
                    _items.move_to_end(key)
    except TypeError:  # a value that does not hash
        return None
    missing = [index for index, item in enumerate(found) if item is None]
    if missing:
        views = page.views()
        rendered = serializer_class([views[index] for index in missing], many=True, context=context)
        try:
            fresh = [
                orjson.Fragment(orjson.dumps(item, default=refuse, option=ORJSON_OPTIONS))
                for item in rendered.data
            ]
        except TypeError:  # orjson's JSONEncodeError is one
            return None
        for index, item in zip(missing, fresh, strict=True):
            found[index] = item
    items = cast(tuple[orjson.Fragment, ...], tuple(found))
    with _lock:
        for index in missing:
            _items[keys[index]] = items[index]
        _pages[page_key] = items
        while len(_items) > MAXSIZE:
            _items.popitem(last=False)
        while len(_pages) > MAXPAGES:
            _pages.popitem(last=False)
    return PlainJSON(items)


def clear() -> None:
    """Forget every item (tests)."""
    with _lock:
        _items.clear()
        _pages.clear()
