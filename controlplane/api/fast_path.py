"""REST framework views whose hot request skips the REST framework.

The agent environment and the registry token endpoint answer every job start and every push or
pull. Their common request (a ``GET`` that asks for the one format it gets) is answered by the
view's ``fast(request)`` in plain Django: no ``Request`` wrapper, no content negotiation, no
``Response`` rendering. Everything else (other methods, ``OPTIONS``, other formats or ``Accept``
headers, too many query parameters: ``plain_request``) ``fast`` leaves to the REST framework by
returning None.

Errors ``fast`` raises (``APIException``) are answered by the REST framework's own exception
handling (the view's ``handle_exception``, ``controlplane.api.exceptions``), and every answer
carries the view's default headers (``Allow``, ``Vary``): the same bytes either way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from django.core.exceptions import PermissionDenied, TooManyFieldsSent
from django.http import Http404, HttpRequest, QueryDict
from django.http.response import HttpResponseBase
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

#: The ``Accept`` headers for which the REST framework chooses JSON, by format: what a plain
#: request carries.
JSON_ACCEPT: Mapping[str, str] = {"": "json", "*/*": "json", JSONRenderer.media_type: "json"}


def plain_request(
    request: HttpRequest,
    method: str,
    *,
    accept: Mapping[str, str] = JSON_ACCEPT,
    overrides: Collection[str] = (),
) -> tuple[QueryDict, str] | None:
    """The query parameters of a request ``fast`` may answer and the format it asks for, or
    None to leave the request to the REST framework: another method (its 405), too many query
    parameters (its 400), a ``?format=`` not in ``overrides`` (its format override: a 404 for
    an unknown one), an ``Accept`` header not in ``accept`` (its content negotiation: a 406).

    Without ``overrides`` any ``?format=`` goes to the REST framework; with them an empty one
    counts as none, as the REST framework reads it.
    """
    if request.method != method:
        return None
    try:
        params: QueryDict = request.GET
    except TooManyFieldsSent:
        return None
    # "in" first: QueryDict.get of a missing key raises (and catches) two exceptions.
    override = params.get("format") if "format" in params else None
    if override is not None and not overrides:
        return None
    if override:
        return (params, override) if override in overrides else None
    fmt = accept.get(request.META.get("HTTP_ACCEPT", ""))
    return None if fmt is None else (params, fmt)


class FastPathAPIView(APIView):
    """An ``APIView`` whose ``fast`` may answer a request itself (see the module)."""

    #: The default headers of each subclass (``Allow``, ``Vary``), computed once.
    _fast_headers: ClassVar[dict[type, dict[str, str]]] = {}

    def fast(self, request: HttpRequest) -> HttpResponseBase | None:
        """The answer to ``request`` without the REST framework, or None to leave it to it."""
        return None

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            response = self.fast(request)
        except (exceptions.APIException, Http404, PermissionDenied) as exc:
            # What the REST framework's handler answers (Django's two as its NotFound and
            # PermissionDenied); anything else propagates as it would there.
            return self._fast_error(request, exc, args, kwargs)
        if response is None:
            return super().dispatch(request, *args, **kwargs)
        headers = self._fast_headers.get(type(self))
        if headers is None:
            headers = self._fast_headers[type(self)] = dict(self.default_response_headers)
        for name, value in headers.items():
            response[name] = value
        return response

    def _fast_error(
        self, request: HttpRequest, exc: Exception, args: Any, kwargs: Any
    ) -> HttpResponseBase:
        """``exc`` answered as ``APIView.dispatch`` answers an exception its handler raised."""
        self.args, self.kwargs = args, kwargs
        self.request = self.initialize_request(request, *args, **kwargs)
        self.headers = self.default_response_headers
        self.format_kwarg = self.get_format_suffix(**kwargs)
        response = self.handle_exception(exc)
        return self.finalize_response(self.request, response, *args, **kwargs)
