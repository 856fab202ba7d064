"""A list item's JSON, memoized by what it is rendered from: ``render_items``.

An item of a compiled page (``controlplane.api.pages``) is a pure function of its row (the
listed model's columns and those of its ``select_related`` rows: the SQL's whole row, which its
``RowView`` keeps), of the serializer class, and of what its links are built from (the
request's scheme, host and script prefix, the URLconf, the organization's slug). Rendering 100
items through their serializer took ~1 ms of CPU in-process, about a third of a 100-item page;
the same rows are asked for again and again (a dashboard polling its clusters), so the items'
bytes are kept, keyed by all of the above, and embedded in the page as ``orjson.Fragment``s,
which orjson writes as they are (``controlplane.api.renderers``).

Nothing needs invalidating: a changed row (or organization slug, or host) is another key, and
the old entry ages out. The memo is a bounded per-process LRU (``MAXSIZE`` items, ~1-2 KB
each with its key), written by hand as ``controlplane.hotcache`` is (an ``OrderedDict`` behind
one lock, taken once a page): ``functools.lru_cache`` keys a function's arguments, while an
item is rendered from its ``RowView`` and the serializer, which are not part of the key, and a
page's misses are rendered together, through the serializer, as before. A row whose values do
not hash (a JSON column) or an item orjson would not write as the REST framework does leaves
the page to the serializer, unmemoized.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import orjson
from django.urls import get_script_prefix, get_urlconf

from controlplane.api.pages import ROW, RowView
from controlplane.api.renderers import ORJSON_OPTIONS, PlainJSON, refuse

#: Items kept per process: 20 pages of 100.
MAXSIZE = 2048

_items: OrderedDict[Hashable, orjson.Fragment] = OrderedDict()
_lock = threading.Lock()


def render_items(
    serializer_class: type, page: Sequence[Any], context: Mapping[str, Any]
) -> PlainJSON | None:
    """``page``'s items as ``serializer_class(page, many=True, context=context)`` renders
    them, as ``orjson.Fragment``s from the memo where it has them; None where the page is not
    for the memo (not ``RowView``s, a row that does not hash, an item orjson refuses), which
    the caller then renders as before."""
    request = context["request"]
    site = (
        serializer_class,
        request.scheme,
        request.get_host(),
        get_script_prefix(),
        get_urlconf(),
        context["organization"].slug,
    )
    try:
        keys = [(site, row.__dict__[ROW] if isinstance(row, RowView) else None) for row in page]
        with _lock:
            found = [_items.get(key) for key in keys]
            for key, item in zip(keys, found, strict=True):
                if item is not None:
                    _items.move_to_end(key)
    except TypeError:  # a value that does not hash
        return None
    missing = [index for index, item in enumerate(found) if item is None]
    if not missing:
        return PlainJSON(found)
    if any(keys[index][1] is None for index in missing):
        return None
    rendered = serializer_class([page[index] for index in missing], many=True, context=context)
    try:
        fresh = [
            orjson.Fragment(orjson.dumps(item, default=refuse, option=ORJSON_OPTIONS))
            for item in rendered.data
        ]
    except TypeError:  # orjson's JSONEncodeError is one
        return None
    with _lock:
        for index, item in zip(missing, fresh, strict=True):
            found[index] = _items[keys[index]] = item
        while len(_items) > MAXSIZE:
            _items.popitem(last=False)
    return PlainJSON(found)


def clear() -> None:
    """Forget every item (tests)."""
    with _lock:
        _items.clear()
