"""Every API error is a JSON object with a ``message``, as Buildkite's REST API answers.

Validation failures are 422 ``{"message": "Validation failed: ...", "errors": [...]}``; the
``errors`` list carries the field-by-field detail for clients that want it. A service's
``ValidationError`` that names no field is a refusal by the object's state: 422 with its message
alone.

Requests Django refuses as suspicious are 400 with what to do, never Django's HTML page (nor its
debug page with ``DEBUG`` on): more query parameters or form fields than
``DATA_UPLOAD_MAX_NUMBER_FIELDS`` (``TooManyFieldsSent``, raised wherever a view first reads
them, DRF's content negotiation included), and JSON nested deeper than the stack, whichever
parser read it (``RecursionError`` from the ``json`` module: 400 like the JSON parser's own
refusal, ``controlplane.api.parsers``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    NON_FIELD_ERRORS,
    DisallowedHost,
    ObjectDoesNotExist,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import set_rollback

from controlplane.api.parsers import NESTED_TOO_DEEPLY

_JSON_MODULE = str(Path(json.__file__).parent)


def _flatten(detail: Any, field: str | None = None) -> list[dict[str, str]]:
    """Turn DRF's nested error detail into ``[{"field": ..., "message": ...}]``."""
    if isinstance(detail, dict):
        errors: list[dict[str, str]] = []
        for key, value in detail.items():
            name = key if field is None else f"{field}.{key}"
            # An object's own errors belong to the field that holds it (None at the top).
            own = key in ("non_field_errors", NON_FIELD_ERRORS)
            errors.extend(_flatten(value, field if own else name))
        return errors
    if isinstance(detail, list):
        return [error for item in detail for error in _flatten(item, field)]
    entry = {"message": str(detail)}
    if field:
        entry["field"] = field
    return [entry]


def validation_message(errors: list[dict[str, str]]) -> str:
    parts = [
        f"{e['field']} {e['message'][:1].lower()}{e['message'][1:]}"
        if "field" in e
        else e["message"]
        for e in errors
    ]
    return "Validation failed: " + "; ".join(part.rstrip(".") for part in parts)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than this service accepts."


class Refused(exceptions.APIException):
    """The object's state refuses the request (a paused queue asked to pause): 422 with only
    a message, as Buildkite answers ``{"message": "Cluster queue is already paused"}``."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY


def _raised_in_json(traceback: TracebackType | None) -> bool:
    """Whether a frame of ``traceback`` is in the ``json`` module (a parser decoding a body)."""
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename.startswith(_JSON_MODULE):
            return True
        traceback = traceback.tb_next
    return False


def suspicious_message(exc: SuspiciousOperation) -> str:
    """What a client whose request Django refused as suspicious should do instead."""
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return (
            f"The request has more than {limit} query parameters or form fields; "
            f"send at most {limit}."
        )
    if isinstance(exc, DisallowedHost):
        return "Send the request to a host name this service answers to (the Host header)."
    return "The request was refused as malformed; check its URL, headers and body."


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RecursionError) and _raised_in_json(exc.__traceback__):
        exc = exceptions.ParseError(f"JSON parse error - {NESTED_TOO_DEEPLY}")
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(suspicious_message(exc))
    elif isinstance(exc, DjangoValidationError):
        # A service error that names a field is invalid input ("Validation failed: ...");
        # one that names none is the object's state refusing the request.
        if hasattr(exc, "error_dict"):
            exc = exceptions.ValidationError(exc.message_dict)
        else:
            exc = Refused(" ".join(exc.messages))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not Found")
    elif isinstance(exc, ObjectDoesNotExist):  # deleted by another request meanwhile
        exc = exceptions.NotFound("Not Found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()

    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header
    if wait := getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(wait))

    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        body: dict[str, Any] = {"message": validation_message(errors), "errors": errors}
        code: int = status.HTTP_422_UNPROCESSABLE_ENTITY
    else:
        body = {"message": str(exc.detail), **getattr(exc, "extra", {})}
        code = exc.status_code
    set_rollback()
    if (request := context.get("request")) is not None:
        # An error is JSON whatever the view renders (the schema's YAML, the agent's shell).
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
    return Response(body, status=code, headers=headers)


def json_not_found(request: Any, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"message": "Not Found"}, status=404)


def json_bad_request(request: Any, exception: Exception | None = None) -> JsonResponse:
    """Django's 400 (a suspicious request outside a DRF view, with ``DEBUG`` off) as JSON."""
    if isinstance(exception, SuspiciousOperation):
        return JsonResponse({"message": suspicious_message(exception)}, status=400)
    return JsonResponse({"message": "Bad Request"}, status=400)


def json_server_error(request: Any) -> JsonResponse:
    return JsonResponse({"message": "Internal server error; the failure was logged."}, status=500)
