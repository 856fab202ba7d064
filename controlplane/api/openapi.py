"""Shared OpenAPI pieces: the error body every endpoint answers with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

F = TypeVar("F", bound=Callable[..., Any])

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "message": serializers.CharField(),
        "errors": serializers.ListField(
            child=serializers.DictField(child=serializers.CharField()), required=False
        ),
    },
)
RateLimitErrorSerializer = inline_serializer(
    name="RateLimitError",
    fields={
        "message": serializers.CharField(),
        "scope": serializers.ChoiceField(choices=["rest", "rest_user"]),
        "limit": serializers.IntegerField(),
        "current": serializers.IntegerField(),
        "reset": serializers.IntegerField(),
    },
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


#: The errors any REST API endpoint can answer with.
ERRORS = {
    400: _error("Malformed request (bad JSON, a bad page number)"),
    401: _error("No API token, or an invalid or revoked one"),
    403: _error("The API token lacks the scope this needs"),
    404: _error("No such organization (for this token), cluster, queue or token"),
    413: _error("The request body is too large"),
    415: _error("The request body is not JSON"),
    422: _error("Validation failed: the message and `errors` say what"),
    429: OpenApiResponse(response=RateLimitErrorSerializer, description="Over a rate limit"),
}


def operation(
    operation_id: str,
    *,
    tags: list[str],
    responses: dict[int, Any],
    request: Any = None,
    description: str | None = None,
) -> Callable[[F], F]:
    """Document one endpoint method: its id, tag, request body and success responses, plus the
    errors every endpoint can answer with."""
    return extend_schema(
        operation_id=operation_id,
        tags=tags,
        request=request,
        responses={**responses, **ERRORS},
        description=description,
    )
