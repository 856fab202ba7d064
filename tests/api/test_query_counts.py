"""Every list and detail endpoint of the REST API has a pinned query count
(tests/support/query_counts.py), so that a new one cannot go unpinned."""

from __future__ import annotations

from collections.abc import Iterator

from django.urls import URLPattern, URLResolver, get_resolver

from tests.support import query_counts

#: The REST API's URL namespaces.
API_NAMESPACES = ("api", "registries-api")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def routes(
    patterns: list[URLPattern | URLResolver] | None = None, namespace: str = ""
) -> Iterator[tuple[str, set[str]]]:
    """``(URL name, methods its view answers)`` of every named route, ``namespace:name``."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(part for part in (namespace, pattern.namespace or "") if part)
            yield from routes(pattern.url_patterns, inner)
        elif pattern.name:
            view = getattr(pattern.callback, "view_class", None) or getattr(
                pattern.callback, "cls", None
            )
            answered = {method for method in METHODS if hasattr(view, method.lower())}
            yield (f"{namespace}:{pattern.name}" if namespace else pattern.name), answered


def test_every_list_and_detail_endpoint_of_the_api_has_a_pinned_query_count() -> None:
    readable = {
        (name, "GET")
        for name, methods in routes()
        if name.split(":")[0] in API_NAMESPACES and "GET" in methods
    }

    assert readable  # the URL configuration was read
    assert sorted(readable - set(query_counts.baselines())) == []


def test_every_pinned_count_names_a_route_and_a_method_it_answers() -> None:
    answered = {(name, method) for name, methods in routes() for method in methods}

    assert sorted(set(query_counts.baselines()) - answered) == []
