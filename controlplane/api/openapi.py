"""Shared OpenAPI pieces: the error body every endpoint answers with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
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


RATE_LIMIT_HEADERS = {
    f"{prefix}-{name}": f"{budget}: {meaning}"
    for prefix, budget in (
        ("RateLimit", "The organization's budget"),
        ("RateLimit-User", "This API token's budget"),
    )
    for name, meaning in (
        ("Scope", "its name (rest, rest_user)"),
        ("Limit", "requests a minute"),
        ("Remaining", "requests left in this minute"),
        ("Reset", "seconds until the minute ends"),
    )
}


def _header(name: str, description: str, codes: list[int]) -> OpenApiParameter:
    return OpenApiParameter(
        name, str, OpenApiParameter.HEADER, response=codes, description=description
    )


def _pagination(codes: list[int]) -> list[OpenApiParameter]:
    positive = {"type": "integer", "minimum": 1}
    return [
        OpenApiParameter("page", positive, OpenApiParameter.QUERY, description="The page, from 1."),
        OpenApiParameter(
            "per_page",
            positive,
            OpenApiParameter.QUERY,
            description=f"Items per page: {settings.API_PAGE_SIZE} by default, at most "
            f"{settings.API_MAX_PAGE_SIZE}.",
        ),
        _header("Link", 'The next, prev, first and last pages (rel="next", ...).', codes),
    ]


def operation(
    operation_id: str,
    *,
    tags: list[str],
    responses: dict[int, Any],
    request: Any = None,
    description: str | None = None,
    paginated: bool = False,
    query: list[OpenApiParameter] | None = None,
) -> Callable[[F], F]:
    """Document one endpoint method: its id, tag, request body, success responses and their
    headers (rate limits; pagination for a list), its ``query`` parameters, and the errors
    every endpoint can answer with."""
    codes = list(responses)
    parameters = [_header(name, text, codes) for name, text in RATE_LIMIT_HEADERS.items()]
    if paginated:
        parameters += _pagination(codes)
    parameters += query or []
    return extend_schema(
        operation_id=operation_id,
        tags=tags,
        request=request,
        responses={**responses, **ERRORS},
        description=description,
        parameters=parameters,
    )
