"""A request body size limit with a clear JSON answer, before anything reads the body."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class RequestBodyLimitMiddleware:
    """Answers 413 ``{"message": ...}`` to a request whose declared body is larger than
    ``API_MAX_BODY_BYTES``. A body longer than it declares is never read past its
    ``Content-Length`` (the WSGI server stops there). The admin keeps Django's own limits."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit: int = settings.API_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit and not request.path.startswith("/admin/"):
            return JsonResponse(
                {"message": f"The request body is {length} bytes; the limit is {limit} bytes."},
                status=413,
            )
        return self.get_response(request)
