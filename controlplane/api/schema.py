"""OpenAPI schema generation (drf-spectacular)."""

from __future__ import annotations

from typing import Any


def only_the_rest_api(
    endpoints: list[tuple[str, Any, str, Any]],
) -> list[tuple[str, Any, str, Any]]:
    """The REST API under ``/v2/organizations/``, ``/v2/access-token`` and the operators'
    ``/v2/operator/``; not the agent and registry-token endpoints, which speak their own
    protocols (and have their own documentation)."""
    return [
        endpoint
        for endpoint in endpoints
        if endpoint[0].startswith(("/v2/organizations/", "/v2/operator/"))
        or endpoint[0] == "/v2/access-token"
    ]
