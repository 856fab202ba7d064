"""``GET /v2/access-token`` (the calling token) and ``GET /v2/organizations/{org}`` (the token's
own organization only), in Buildkite's bodies; and CORS on the REST API
(``Access-Control-Allow-Origin: *``, ``Link`` and the rate limit headers exposed, preflights
answered). Over the test client and over HTTP."""

from __future__ import annotations

import base64

import pytest
import requests
from django.conf import settings

from clusters import services
from clusters.models import ApiScope, Organization
from controlplane.api.ratelimit import Budget, Usage
from tests.api.expected import TIMESTAMP
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

ACCESS_TOKEN = "/v2/access-token"
ORIGIN = "https://dashboard.example.com"


def organization_body(organization: Organization, host: str = "http://testserver") -> dict:
    return {
        "id": str(organization.uuid),
        "graphql_id": base64.b64encode(f"Organization---{organization.uuid}".encode()).decode(),
        "url": f"{host}/v2/organizations/{organization.slug}",
        "web_url": f"{host}/admin/clusters/organization/{organization.pk}/change/",
        "name": organization.name,
        "slug": organization.slug,
    }


def without_created_at(body: dict) -> dict:
    """``body`` but its creation time (checked apart: the format, not the value)."""
    return {name: value for name, value in body.items() if name != "created_at"}


# --- GET /v2/access-token -----------------------------------------------------------------------


def test_the_access_token_is_described_with_buildkites_body(api) -> None:
    user = api.token.user
    user.first_name, user.last_name = "Sam", "Kim"
    user.save()

    with expected_queries("api:access-token"):
        response = api.client.get(ACCESS_TOKEN, HTTP_AUTHORIZATION=f"Bearer {api.secret}")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "uuid": str(api.token.pk),
        "scopes": list(ApiScope.values),
        "description": api.token.description,
        "created_at": body["created_at"],
        "user": {"name": "Sam Kim", "email": user.email},
    }
    assert TIMESTAMP.fullmatch(body["created_at"])
    assert response["RateLimit-User-Scope"] == "rest_user"
    assert response["RateLimit-Scope"] == "rest"


def test_the_access_token_needs_no_scope(make_api) -> None:
    narrow = make_api(scopes=[ApiScope.WRITE_REGISTRIES])

    response = narrow.client.get(ACCESS_TOKEN, HTTP_AUTHORIZATION=f"Bearer {narrow.secret}")

    assert response.status_code == 200
    assert response.json()["scopes"] == ["write_registries"]


def test_without_a_valid_token_the_access_token_is_401(client, api) -> None:
    services.api_token_revoke(token=api.token)

    missing = client.get(ACCESS_TOKEN)
    revoked = client.get(ACCESS_TOKEN, HTTP_AUTHORIZATION=f"Bearer {api.secret}")

    assert (missing.status_code, missing.json()) == (
        401,
        {"message": "Send an API access token as 'Authorization: Bearer <token>'."},
    )
    assert (revoked.status_code, revoked.json()) == (
        401,
        {"message": "Invalid or revoked API access token."},
    )


def test_the_access_token_answers_get_only(api) -> None:
    response = api.client.delete(ACCESS_TOKEN, HTTP_AUTHORIZATION=f"Bearer {api.secret}")

    assert response.status_code == 405
    api.token.refresh_from_db()
    assert api.token.revoked_at is None


# --- GET /v2/organizations/{org} ----------------------------------------------------------------


def test_the_tokens_organization_in_buildkites_body(api) -> None:
    organization = api.organization

    with expected_queries("api:organization"):
        response = api.get("")

    assert response.status_code == 200
    body = response.json()
    assert without_created_at(body) == organization_body(organization)
    assert TIMESTAMP.fullmatch(body["created_at"])


@pytest.mark.parametrize("slug", ["other", "nowhere"])
def test_any_other_organization_is_404_whether_it_exists_or_not(api, make_api, slug) -> None:
    make_api("other")

    response = api.get(f"/v2/organizations/{slug}")

    assert (response.status_code, response.json()) == (404, {"message": "No organization found"})


def test_the_organization_needs_read_organizations(make_api) -> None:
    lacking = make_api(scopes=[ApiScope.READ_CLUSTERS])

    response = lacking.get("")

    assert (response.status_code, response.json()) == (
        403,
        {"message": "This API token needs the read_organizations scope."},
    )


def test_organization_ids_are_uuids_unique_to_each(make_api) -> None:
    first, second = make_api("acme").organization, make_api("other").organization

    assert first.uuid != second.uuid
    assert first.uuid.version == 4


# --- CORS ---------------------------------------------------------------------------------------


def exposed(response) -> set[str]:
    return {name.strip().lower() for name in response["Access-Control-Expose-Headers"].split(",")}


@pytest.mark.parametrize("path", ["/clusters", "", ACCESS_TOKEN, "/clusters?per_page=1"])
def test_api_answers_allow_any_origin_and_expose_link_and_rate_limits(api, path) -> None:
    services.cluster_create(organization=api.organization, name="a")
    services.cluster_create(organization=api.organization, name="b")
    url = path if path.startswith("/v2/") else api.base + path

    response = api.client.get(url, HTTP_AUTHORIZATION=f"Bearer {api.secret}", HTTP_ORIGIN=ORIGIN)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response
    sent = {
        name.lower() for name in response.headers if name.lower().startswith(("ratelimit", "link"))
    }
    assert sent  # the rate limit headers (and Link on a page)
    assert sent <= exposed(response)
    assert {"link", "ratelimit-remaining", "ratelimit-user-remaining", "retry-after"} <= exposed(
        response
    )


def test_errors_carry_cors_headers_too(client) -> None:
    response = client.get("/v2/organizations/acme/clusters", HTTP_ORIGIN=ORIGIN)

    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == "*"


def test_every_rate_limit_header_is_exposed() -> None:
    names = {
        name
        for header in ("RateLimit", "RateLimit-User")
        for name in Usage(Budget("rest", header, "k", 1), current=5, reset=3).headers()
    }
    assert names <= set(settings.CORS_EXPOSE_HEADERS)


def test_a_preflight_is_answered_without_a_token(client) -> None:
    response = client.options(
        "/v2/organizations/acme/clusters",
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


@pytest.mark.parametrize(
    "path",
    ["/v3/agent/environment", "/v2/webhooks/buildkite/acme", "/admin/login/", "/registry/token"],
)
def test_no_cors_outside_the_rest_api(client, path) -> None:
    response = client.get(path, HTTP_ORIGIN=ORIGIN)

    assert "Access-Control-Allow-Origin" not in response


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_over_http(live_server, api, make_api) -> None:
    make_api("other")
    headers = {"Authorization": f"Bearer {api.secret}", "Origin": ORIGIN}
    base = live_server.url

    token = requests.get(f"{base}{ACCESS_TOKEN}", headers=headers, timeout=10)
    own = requests.get(f"{base}/v2/organizations/acme", headers=headers, timeout=10)
    other = requests.get(f"{base}/v2/organizations/other", headers=headers, timeout=10)
    preflight = requests.options(
        f"{base}/v2/organizations/acme/clusters",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=10,
    )

    assert (token.status_code, token.json()["uuid"]) == (200, str(api.token.pk))
    assert own.status_code == 200
    assert without_created_at(own.json()) == organization_body(api.organization, base)
    assert (other.status_code, other.json()) == (404, {"message": "No organization found"})
    for response in (token, own, other, preflight):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed_names = {
        name.strip() for name in own.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {"Link", "RateLimit-Remaining", "RateLimit-User-Remaining"} <= exposed_names
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"]
