"""The REST API's JSON renderer: the REST framework's ``JSONRenderer``, whose bytes it keeps,
writing lists of plain values with orjson.

A page of 100 clusters is ~100 KB of JSON; the standard library's C encoder took ~0.55 ms of
CPU for it, about a fifth of the whole request, and orjson ~0.05 ms. The two write the same
bytes for what a ``PlainJSON`` may hold (strings, integers of 64 bits, booleans, None, lists and
dicts with string keys, UUIDs): compact, with non-ASCII characters as they are and only ``"``,
``\\`` and control characters escaped, as the REST framework's defaults ask
(``COMPACT_JSON``, ``UNICODE_JSON``). U+2028 and U+2029 are then escaped as the REST framework
escapes them. They differ on floats (exponents, NaN), datetimes, decimals and the like, which
is why only data marked ``PlainJSON`` by its producer takes this way; anything orjson refuses
(a type it does not know, an integer past 64 bits, a lone surrogate), a request for indented
or ASCII-only JSON, and everything else is rendered by the REST framework as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework import renderers

_LINE_SEPARATORS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


class PlainJSON(list):  # type: ignore[type-arg]
    """A response body its producer vouches holds only strings, 64-bit integers, booleans,
    None, UUIDs, and lists and dicts (string keys) of these: no float (see the module); or
    items orjson wrote so (``orjson.Fragment``s of ``controlplane.api.memo``)."""


def refuse(value: Any) -> Any:
    """orjson's ``default``: a type orjson would not write as the REST framework does."""
    raise TypeError(type(value).__name__)


#: How a ``PlainJSON`` is written: a subclass goes to ``default`` (``refuse``), as does a
#: datetime or a dataclass.
ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _unfragmented(data: PlainJSON) -> list[Any]:
    """``data`` with each memoized item read back (the same values, a UUID as its text, which
    the REST framework writes alike): for the REST framework's encoder."""
    return [orjson.loads(item.contents) if type(item) is orjson.Fragment else item for item in data]


class JSONRenderer(renderers.JSONRenderer):
    """The REST framework's ``JSONRenderer`` (same media type, options and bytes); a
    ``PlainJSON`` is written by orjson (see the module)."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if (
            type(data) is PlainJSON
            and self.compact
            and not self.ensure_ascii
            and self.get_indent(accepted_media_type or "", renderer_context or {}) is None
        ):
            try:
                body = orjson.dumps(
                    list(data),  # a subclass goes to ``default`` with the options
                    default=refuse,
                    option=ORJSON_OPTIONS,
                )
            except TypeError:  # orjson's JSONEncodeError is one
                pass
            else:
                for character, escaped in _LINE_SEPARATORS:
                    if character in body:
                        body = body.replace(character, escaped)
                return body
        if type(data) is PlainJSON:
            data = _unfragmented(data)
        rendered: bytes = super().render(data, accepted_media_type, renderer_context)
        return rendered
