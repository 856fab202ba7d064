"""Absolute URLs of routes for the items of a response, each route reversed once per process.

``reverse()`` and ``build_absolute_uri()`` cost tens of microseconds each, and a page of 100
clusters links each cluster three or four times. ``Links`` answers what
``request.build_absolute_uri(reverse(name, kwargs=kwargs))`` answers, byte for byte, but reverses
a route once (its template is kept for the process: below): arguments that vary per item become
placeholders in a template that each item formats (one ``str.format``). Only UUIDs and
integers are formatted so: their text is the same quoted or not, and every path converter this
service uses takes it. A route whose converters refuse the placeholders is reversed per call, as
before.

``links_for(request)`` is the request's one ``Links``. Templates are also kept for the process
(``_templates``, at most ``MAX_TEMPLATES``), by everything the URL depends on besides the
formatted arguments: the scheme and host, the script prefix, the URLconf's resolver, the route
and its fixed arguments; reversing them again for every response was most of a short list's
time apart from the request itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, get_resolver, get_script_prefix, get_urlconf, reverse

#: Arguments formatted into a template rather than reversed.
FORMATTED = (uuid.UUID, int)
#: How many templates the process keeps (it forgets them all past this: hosts and
#: organizations are few, and a forgotten template is only reversed again).
MAX_TEMPLATES = 4096

_templates: dict[tuple[Any, ...], str] = {}

Formatter = Callable[..., str]


class Links:
    """The absolute URLs one request's response links to."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request
        self._formatters: dict[tuple[Any, ...], Formatter] = {}
        self._site: tuple[Any, ...] | None = None

    def formatter(self, name: str, *formatted: str, **fixed: Any) -> Formatter:
        """``format(**arguments)`` -> the URL of route ``name`` with ``fixed`` and
        ``arguments``, which are the ``formatted`` ones: UUIDs or integers (anything else would
        not be quoted as ``reverse`` quotes it)."""
        key = (name, formatted, *fixed.items())
        found = self._formatters.get(key)
        if found is None:
            found = self._formatters[key] = self._formatter(name, formatted, fixed)
        return found

    def url(self, name: str, **kwargs: Any) -> str:
        """``build_absolute_uri(reverse(name, kwargs=kwargs))``, formatting the UUID and integer
        arguments into the route's template."""
        formatted = tuple(k for k, v in kwargs.items() if isinstance(v, FORMATTED))
        fixed = {k: v for k, v in kwargs.items() if k not in formatted}
        return self.formatter(name, *formatted, **fixed)(**{k: kwargs[k] for k in formatted})

    def _absolute(self, name: str, kwargs: dict[str, Any]) -> str:
        return self._request.build_absolute_uri(reverse(name, kwargs=kwargs))

    def _formatter(self, name: str, formatted: tuple[str, ...], fixed: dict[str, Any]) -> Formatter:
        """The template's ``format``: the URL with ``{argument}`` for each formatted argument
        (braces elsewhere doubled); or, for a route that cannot be templated, ``reverse``."""
        if self._site is None:  # what every URL of the request depends on
            request = self._request
            self._site = (request.scheme, request.get_host(), get_script_prefix())
        key = (*self._site, get_resolver(get_urlconf()), name, formatted, *fixed.items())
        template = _templates.get(key)
        if template is not None:
            return template.format
        found = self._template(name, formatted, fixed)
        if isinstance(found, str):
            if len(_templates) >= MAX_TEMPLATES:
                _templates.clear()
            _templates[key] = found
            return found.format
        return found

    def _template(
        self, name: str, formatted: tuple[str, ...], fixed: dict[str, Any]
    ) -> str | Formatter:
        """The route's template, or, for a route that cannot be templated, ``reverse``."""

        def reversed_each_time(**arguments: Any) -> str:
            return self._absolute(name, {**fixed, **arguments})

        holes = {argument: f"~{argument}~" for argument in formatted}
        try:
            url = self._absolute(name, {**fixed, **holes})
        except NoReverseMatch:  # a converter that only takes digits, or a UUID
            return reversed_each_time
        template = url.replace("{", "{{").replace("}", "}}")
        for argument, hole in holes.items():
            if template.count(hole) != 1:  # the placeholder's text is elsewhere in the URL too
                return reversed_each_time
            template = template.replace(hole, "{" + argument + "}")
        return template


def links_for(request: HttpRequest) -> Links:
    """The request's ``Links`` (made at its first use)."""
    links: Links | None = getattr(request, "_links", None)
    if links is None:
        links = Links(request)
        request._links = links  # type: ignore[attr-defined]
    return links
