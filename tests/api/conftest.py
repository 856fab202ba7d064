"""Fixtures for the REST API: organizations, users and API tokens with scopes, and a client
that sends a token as ``Authorization: Bearer``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from clusters import services
from clusters.models import ApiScope, ApiToken, Cluster, Organization

ALL_SCOPES = list(ApiScope.values)


@dataclass
class Api:
    """A test client that authenticates with one API token, and the token's organization."""

    client: Client
    token: ApiToken
    secret: str

    @property
    def organization(self) -> Organization:
        return self.token.organization

    @property
    def base(self) -> str:
        return f"/v2/organizations/{self.organization.slug}"

    def _headers(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.secret}"}

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(self._url(path), params, **self._headers())

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(
            self._url(path), body or {}, content_type="application/json", **self._headers()
        )

    def put(self, path: str, body: Any) -> Any:
        return self.client.put(
            self._url(path), body, content_type="application/json", **self._headers()
        )

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(
            self._url(path), body, content_type="application/json", **self._headers()
        )

    def delete(self, path: str) -> Any:
        return self.client.delete(self._url(path), **self._headers())

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any of the above by name, for tables of requests (``body`` only where it is sent)."""
        if method in ("get", "delete"):
            return getattr(self, method)(path)
        return getattr(self, method)(path, body or {})

    def _url(self, path: str) -> str:
        """``path`` relative to the organization (``/clusters``), or absolute (``/v2/...``)."""
        return path if path.startswith("/v2/") else f"{self.base}{path}"


def staff(api: Api) -> Api:
    """``api`` with its token's owner made staff: an operator's token (``/v2/operator/...``)."""
    User.objects.filter(pk=api.token.user_id).update(is_staff=True)
    return api


@pytest.fixture
def make_api(db) -> Callable[..., Api]:
    """``make_api(org_slug="acme", scopes=[...])``: a client with a new token of that
    organization (created if needed), owned by user ``sam``."""

    def make(org_slug: str = "acme", scopes: list[str] | None = None) -> Api:
        organization = Organization.objects.filter(slug=org_slug).first()
        if organization is None:
            organization = services.organization_create(slug=org_slug, name=org_slug.title())
        user = User.objects.filter(username="sam").first() or User.objects.create_user(
            "sam", "sam@example.com", first_name="Sam", last_name="Kim"
        )
        token, secret = services.api_token_create(
            user=user,
            organization=organization,
            description="tests",
            scopes=ALL_SCOPES if scopes is None else scopes,
        )
        return Api(client=Client(), token=token, secret=secret)

    return make


@pytest.fixture
def cluster(api) -> Cluster:
    """Cluster "Open Source" of organization ``acme``, created by the API token's owner."""
    return services.cluster_create(
        organization=api.organization, name="Open Source", created_by=api.token.user
    )


@pytest.fixture
def api(make_api) -> Api:
    """A client with every scope, for organization ``acme``."""
    return make_api()


@pytest.fixture
def other_api(make_api) -> Api:
    """A client with every scope, for another organization, ``other``."""
    return make_api("other")
