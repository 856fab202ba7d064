"""A request id on every request: the one the client or proxy sent in ``X-Request-ID`` when it
looks like an id (at most 128 letters, digits and ``-._:``), else a new one (32 hex digits).

It is set as the response's ``X-Request-ID`` and as ``request.request_id``, and every log record
of the request carries it as ``request_id`` (controlplane/logging.py), so one id finds a client's
report, the proxy's access log and our log lines. A value that is not sane is replaced rather than
logged: it could carry anything, and a log search by it would find nothing useful.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from controlplane.logging import bind_context, clear_context

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-._:]{0,127}")


def request_id_from(value: str | None) -> str:
    """``value`` when it is a sane id, else a new one."""
    if value and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """First in ``MIDDLEWARE``, so that every answer (413s, CORS preflights, errors) has the id.

    The id stays bound after the response leaves this middleware because Django logs a 4xx or
    5xx answer (``django.request``) after the whole middleware chain; it is cleared when the
    request finishes, before the thread serves another one.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        bind_context(request_id=request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


@receiver(request_finished, dispatch_uid="controlplane.request_id.clear")
def _clear_request_id(sender: Any = None, **kwargs: Any) -> None:
    clear_context()
