"""Absolute URLs of routes for the items of a response, each route reversed once per request.

``reverse()`` and ``build_absolute_uri()`` cost tens of microseconds each, and a page of 100
clusters links each cluster three or four times. ``Links.url`` answers what
``request.build_absolute_uri(reverse(name, kwargs=kwargs))`` answers, byte for byte, but reverses
a route once per request: arguments that are UUIDs or integers (which need no quoting) become
placeholders in a template, formatted per item; any other argument (text, such as an
organization's slug) is reversed as it is and keys the template. A route whose converters refuse
the placeholders is reversed per call, as before.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

#: Arguments formatted into a template rather than reversed: their text is the same quoted or
#: not, and every path converter of this service accepts it.
FORMATTED = (uuid.UUID, int)
#: A template that could not be made: the route is reversed per call.
_UNTEMPLATED = ""


class Links:
    """The absolute URLs one request's response links to."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request
        self._templates: dict[tuple[Any, ...], str] = {}

    def url(self, name: str, **kwargs: Any) -> str:
        key = (name, *[(k, None if isinstance(v, FORMATTED) else v) for k, v in kwargs.items()])
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self._template(name, kwargs)
        if template is _UNTEMPLATED:
            return self._absolute(name, kwargs)
        return template.format_map(kwargs)

    def _absolute(self, name: str, kwargs: dict[str, Any]) -> str:
        return self._request.build_absolute_uri(reverse(name, kwargs=kwargs))

    def _template(self, name: str, kwargs: dict[str, Any]) -> str:
        """The URL with ``{argument}`` for each formatted argument (braces elsewhere doubled),
        or ``_UNTEMPLATED``."""
        holes = {k: f"~{k}~" for k, v in kwargs.items() if isinstance(v, FORMATTED)}
        try:
            url = self._absolute(name, {**kwargs, **holes})
        except NoReverseMatch:  # a converter that only takes digits, or a UUID
            return _UNTEMPLATED
        template = url.replace("{", "{{").replace("}", "}}")
        for argument, hole in holes.items():
            if template.count(hole) != 1:  # the placeholder's text is elsewhere in the URL too
                return _UNTEMPLATED
            template = template.replace(hole, "{" + argument + "}")
        return template
