"""A Content-Security-Policy on every HTML page: the operators' console and the API docs.

Both pages are served from this service with their assets (Django's admin, and Swagger UI from
drf-spectacular-sidecar, ``SWAGGER_UI_DIST = "SIDECAR"``), so the policy allows scripts, styles,
images, fonts and requests from this origin only: an injected ``<script>``, inline or from
elsewhere, does not run, and no form posts anywhere else. Styles may be inline: Swagger UI sets
``style`` attributes from its scripts and drf-spectacular's page has a ``<style>`` block; the docs
page is ``SpectacularSwaggerSplitView``, whose start-up script is a file of its own
(``?script``), not an inline one.

A small middleware rather than django-csp: one fixed policy on HTML responses, nothing to
configure. JSON answers carry none (a browser applies a policy to documents, not to fetches).
A response that already has a policy keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"
POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Adds :data:`POLICY` to every ``text/html`` response that has no policy of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if content_type.startswith("text/html") and HEADER not in response:
            response[HEADER] = POLICY
        return response
