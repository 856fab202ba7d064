"""The token endpoint's fast path writes its answer as the REST framework's JSONRenderer does,
and reads the query string Django would parse."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.exceptions import TooManyFieldsSent
from django.test import RequestFactory
from rest_framework.renderers import JSONRenderer

from registries.tokens import Principal, Scope, refresh_token_issue, token_issue
from registries.views import CACHED_QUERY_LENGTH, _Answer, _query, _render, _share_query

ANSWERS: list[dict[str, Any]] = [
    {
        "token": "a.b.c",
        "access_token": "a.b.c",
        "expires_in": 300,
        "issued_at": "2026-01-01T00:00:00Z",
    },
    {"token": "x", "refresh_token": "y", "expires_in": 0, "issued_at": ""},
    {"text": 'é \u2028 \u2029 \x1b " \\ </script>', "n": -1.5, "none": None, "ok": True},
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_answer_is_the_renderers_bytes(answer: dict[str, Any]) -> None:
    assert _render(answer) == JSONRenderer().render(answer)


@pytest.mark.parametrize("scopes", [[], [Scope("repository", "acme/0123456789ab/base", ("pull",))]])
def test_a_token_answer_is_written_as_the_renderer_writes_it(scopes: list[Scope]) -> None:
    issued = token_issue(Principal(subject="s", namespace="acme/0123456789ab"), scopes)

    assert issued.as_json() == JSONRenderer().render(issued.as_response())


def test_an_answer_with_a_refresh_token_is_written_as_the_renderer_writes_it() -> None:
    principal = Principal(subject="s", namespace="acme/0123456789ab", agent_token_id=uuid.uuid4())
    answer = _Answer(token_issue(principal, []), refresh_token_issue(principal))

    assert answer.json() == JSONRenderer().render(answer.data())
    assert sorted(answer.data()) == [
        "access_token",
        "expires_in",
        "issued_at",
        "refresh_token",
        "token",
    ]


# --- the query string, parsed once per process --------------------------------------------------

QUERY = "service=hosted-registry&scope=repository%3Aacme%2Fx%3Apull&scope=a+b&empty&offline_token="


def test_a_shared_query_is_the_query_dict_django_makes() -> None:
    first, second = (
        RequestFactory().get(f"/registry/token?{QUERY}"),
        RequestFactory().get(f"/registry/token?{QUERY}"),
    )

    _share_query(first)
    _share_query(second)

    expected = RequestFactory().get(f"/registry/token?{QUERY}").GET
    assert list(first.GET.lists()) == list(expected.lists())
    assert first.GET.encoding == expected.encoding
    assert second.GET is first.GET
    with pytest.raises(AttributeError, match="immutable"):
        first.GET["scope"] = "registry:catalog:*"


def test_a_request_that_parsed_its_query_keeps_it() -> None:
    request = RequestFactory().get(f"/registry/token?{QUERY}")
    own = request.GET

    _share_query(request)

    assert request.GET is own


def test_too_many_fields_are_left_to_django(settings) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 2
    request = RequestFactory().get(f"/registry/token?{QUERY}")

    _share_query(request)

    with pytest.raises(TooManyFieldsSent):
        request.GET  # noqa: B018 - the property raises


def test_a_long_query_string_is_not_kept() -> None:
    long = f"service=hosted-registry&scope={'a' * CACHED_QUERY_LENGTH}"
    request = RequestFactory().get(f"/registry/token?{long}")
    _query.cache_clear()

    _share_query(request)

    assert request.GET.getlist("scope") == ["a" * CACHED_QUERY_LENGTH]
    assert _query.cache_info().currsize == 0
