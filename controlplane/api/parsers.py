"""The one JSON reader of request bodies: the REST API's parser and the webhook's body.

Python's ``json`` reads what JSON is not (``NaN``, ``Infinity``, ``1e400`` as infinity) and
raises ``RecursionError``, not ``ValueError``, on deep nesting, which DRF's parser let through as
a 500. ``json_loads`` refuses all of these, and anything nested deeper than
``MAX_JSON_DEPTH``, with a ``ValueError`` whose message says what is wrong: the code that handles
the parsed value recurses too, so a depth that parses could still exhaust the stack later.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

#: The deepest nesting of objects and arrays a body may have (the deepest body this service
#: takes, a webhook payload, has 4 levels).
MAX_JSON_DEPTH = 32

NESTED_TOO_DEEPLY = (
    f"it is nested more than {MAX_JSON_DEPTH} levels deep; send at most {MAX_JSON_DEPTH} levels"
)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests objects and arrays deeper than ``MAX_JSON_DEPTH`` (without
    recursing: the value may be as deep as the stack allows)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def json_loads(body: bytes | str) -> Any:
    """The JSON value of ``body``. Raises ``ValueError`` with a message for anything that is not
    JSON (UTF-8 included), for NaN or infinities, and for nesting deeper than
    ``MAX_JSON_DEPTH``."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError(NESTED_TOO_DEEPLY) from None
    if isinstance(value, dict | list) and _too_deep(value):
        raise ValueError(NESTED_TOO_DEEPLY)
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, reading through ``json_loads``: 400 ``JSON parse error - ...`` for
    any body it refuses, never a 500."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json_loads(codecs.getreader(encoding)(stream).read())
        except ValueError as exc:  # UnicodeDecodeError included
            raise ParseError(f"JSON parse error - {exc}") from exc
