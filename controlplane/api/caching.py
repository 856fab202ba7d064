"""Responses that carry a secret are never stored by a cache, a proxy or the browser's history:
the agent token a create answers with, a console page that shows a secret once, a registry
token. ``Pragma: no-cache`` is for HTTP/1.0 caches that do not read ``Cache-Control``."""

from __future__ import annotations

from typing import TypeVar

from django.http import HttpResponseBase

#: The headers of a response that carries a secret.
SECRET_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}

R = TypeVar("R", bound=HttpResponseBase)


def no_store(response: R) -> R:
    """``response`` with ``SECRET_HEADERS`` set; returned for chaining."""
    for name, value in SECRET_HEADERS.items():
        response[name] = value
    return response
