"""System checks (``manage.py check``) for the REST API: every view under an organization is an
``OrganizationAPIView`` that fails closed.

``OrganizationAPIView.__init_subclass__`` refuses a view class when it is created; this walks the
URL configuration, so it also refuses what that cannot see: a handler or a hook set on a class
afterwards, and a view under ``v2/organizations/`` that does not use the base at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.core import checks
from django.urls import URLPattern, URLResolver, get_resolver

from clusters.api.base import OrganizationAPIView, configuration_errors

#: Where the REST API's organization resources are routed (``controlplane/urls.py``).
ORGANIZATION_PREFIX = "v2/organizations/"


def routes(
    patterns: Sequence[URLPattern | URLResolver] | None = None, prefix: str = ""
) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every route of the URL configuration, as written (its prefixes joined), and its view."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern.callback


def organization_routes() -> list[tuple[str, Callable[..., Any]]]:
    """The routes of the REST API's organization resources, in URL configuration order."""
    return [(route, view) for route, view in routes() if route.startswith(ORGANIZATION_PREFIX)]


def check_api_views(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for route, view in organization_routes():
        view_class = getattr(view, "view_class", None)
        name = getattr(view_class or view, "__qualname__", repr(view))
        if not (isinstance(view_class, type) and issubclass(view_class, OrganizationAPIView)):
            errors.append(
                checks.Error(
                    f"{route} is served by {name}, which is not an OrganizationAPIView: nothing "
                    "checks its token, organization or scopes.",
                    hint="Subclass clusters.api.base.OrganizationAPIView.",
                    obj=route,
                    id="clusters.E001",
                )
            )
            continue
        errors.extend(
            checks.Error(problem, obj=route, id="clusters.E002")
            for problem in configuration_errors(view_class)
        )
    return errors


def register() -> None:
    checks.register(check_api_views, checks.Tags.urls)
