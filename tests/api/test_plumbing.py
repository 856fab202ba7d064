"""What every REST API endpoint shares: authentication, rate limits, the body size limit, the
media type, the OpenAPI schema and its documentation page, and how API tokens are made."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from clusters import services
from clusters.models import ApiToken, Cluster, Organization
from tests.support.processes import free_port

pytestmark = pytest.mark.django_db


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Send an API access token as 'Authorization: Bearer <token>'."),
        ("Bearer bkua_not-a-token", "Invalid or revoked API access token."),
        ("Basic c2FtOnNlY3JldA==", "Send an API access token as 'Authorization: Bearer <token>'."),
        ("Bearer ", "Send an API access token as 'Authorization: Bearer <token>'."),
    ],
)
def test_no_or_a_bad_token_is_401_with_a_bearer_challenge(api, client, header, message) -> None:
    extra = {"HTTP_AUTHORIZATION": header} if header else {}

    response = client.get("/v2/organizations/acme/clusters", **extra)

    assert response.status_code == 401
    assert response.json() == {"message": message}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_revoked_token_or_an_inactive_users_token_is_401(api, make_api) -> None:
    services.api_token_revoke(token=api.token)
    assert api.get("/clusters").status_code == 401

    other = make_api()
    User.objects.filter(pk=other.token.user.pk).update(is_active=False)
    assert other.get("/clusters").status_code == 401


def test_only_the_hash_of_a_token_is_stored(api) -> None:
    stored = ApiToken.objects.get(pk=api.token.pk)
    assert stored.token_hash == ApiToken.hash_secret(api.secret)
    assert api.secret not in str(ApiToken.objects.values().get(pk=api.token.pk))
    assert api.secret.startswith("bkua_")


# --- rate limits -------------------------------------------------------------------------------


@pytest.fixture
def limits(settings):
    """Small limits, counted apart from every other test's requests."""
    settings.API_RATE_LIMIT_KEY_PREFIX = f"test-{uuid.uuid4().hex}"
    settings.API_RATE_LIMIT_TOKEN = 3
    settings.API_RATE_LIMIT_ORGANIZATION = 5
    return settings


def test_every_response_carries_both_budgets(api, limits) -> None:
    response = api.get("/clusters")

    assert response.status_code == 200
    assert response["RateLimit-Scope"] == "rest"
    assert response["RateLimit-Limit"] == "5"
    assert response["RateLimit-Remaining"] == "4"
    assert 1 <= int(response["RateLimit-Reset"]) <= 60
    assert response["RateLimit-User-Scope"] == "rest_user"
    assert response["RateLimit-User-Limit"] == "3"
    assert response["RateLimit-User-Remaining"] == "2"
    assert not response.has_header("RateLimit-User-Warning")


def test_a_token_over_its_budget_gets_429_and_writes_nothing(api, limits) -> None:
    for _ in range(3):
        assert api.get("/clusters").status_code == 200

    response = api.post("/clusters", {"name": "over the limit"})

    assert response.status_code == 429
    body = response.json()
    assert body["message"] == (
        "You have exceeded your API rate limit. Please wait "
        f"{body['reset']} seconds before making more requests."
    )
    assert (body["scope"], body["limit"], body["current"]) == ("rest_user", 3, 4)
    assert response["Retry-After"] == str(body["reset"])
    assert response["RateLimit-User-Warning"] == "You have exceeded your API rate limit."
    assert response["RateLimit-User-Remaining"] == "0"
    assert Cluster.objects.count() == 0


def test_the_organizations_budget_is_shared_by_its_tokens(make_api, limits) -> None:
    first, second = make_api(), make_api()
    for _ in range(3):
        assert first.get("/clusters").status_code == 200
    assert second.get("/clusters").status_code == 200
    assert second.get("/clusters").status_code == 200

    response = second.get("/clusters")

    assert response.status_code == 429
    assert (response.json()["scope"], response.json()["limit"]) == ("rest", 5)
    # Another organization has its own budget.
    assert make_api("other").get("/clusters").status_code == 200


def test_with_the_cache_down_the_api_answers_without_rate_limits(api, settings) -> None:
    port = free_port()  # nothing listens: a Redis that is down
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }

    response = api.get("/clusters")

    assert response.status_code == 200
    assert not response.has_header("RateLimit-Remaining")


# --- request bodies ----------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_and_writes_nothing(api, settings) -> None:
    settings.API_MAX_BODY_BYTES = 100

    response = api.post("/clusters", {"name": "x", "description": "y" * 200})

    assert response.status_code == 413
    assert response.json()["message"].endswith("the limit is 100 bytes.")
    assert Cluster.objects.count() == 0


def test_a_body_that_is_not_json_is_415(api) -> None:
    response = api.client.post(
        f"{api.base}/clusters", {"name": "x"}, **api._headers()
    )  # multipart form

    assert response.status_code == 415
    assert response.json()["message"].startswith("Unsupported media type")
    assert Cluster.objects.count() == 0


# --- schema and documentation ------------------------------------------------------------------


def test_the_openapi_schema_describes_every_rest_api_operation(client) -> None:
    response = client.get("/v2/schema/")

    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
    base = "/v2/organizations/{org_slug}/clusters"
    cluster, queue = f"{base}/{{cluster_id}}", f"{base}/{{cluster_id}}/queues/{{queue_id}}"
    operations = {
        (path, method.upper())
        for path, methods in schema["paths"].items()
        for method in methods
        if method != "parameters"
    }
    assert operations == {
        (base, "GET"), (base, "POST"),
        (cluster, "GET"), (cluster, "PUT"), (cluster, "PATCH"), (cluster, "DELETE"),
        (f"{cluster}/queues", "GET"), (f"{cluster}/queues", "POST"),
        (queue, "GET"), (queue, "PUT"), (queue, "PATCH"), (queue, "DELETE"),
        (f"{queue}/pause_dispatch", "POST"), (f"{queue}/resume_dispatch", "POST"),
        (f"{queue}/environment", "GET"),
        (f"{cluster}/tokens", "GET"), (f"{cluster}/tokens", "POST"),
        (f"{cluster}/tokens/{{token_id}}", "GET"), (f"{cluster}/tokens/{{token_id}}", "PUT"),
        (f"{cluster}/tokens/{{token_id}}", "PATCH"), (f"{cluster}/tokens/{{token_id}}", "DELETE"),
        (f"{cluster}/registry", "GET"), (f"{cluster}/registry/retry", "POST"),
        (f"{cluster}/registry/usage", "GET"), (f"{cluster}/registry/repositories", "GET"),
        (f"{cluster}/registry/repositories/{{repository}}/tags", "GET"),
        (f"{cluster}/registry/repositories/{{repository}}/tags/{{tag}}", "DELETE"),
        (f"{cluster}/registry/quota", "GET"), (f"{cluster}/registry/quota", "PUT"),
        (f"{cluster}/registry/quota", "PATCH"), (f"{cluster}/registry/quota", "DELETE"),
        ("/v2/organizations/{org_slug}/registry-quota", "GET"),
        ("/v2/organizations/{org_slug}/registry-quota", "PUT"),
        ("/v2/organizations/{org_slug}/registry-quota", "PATCH"),
        ("/v2/organizations/{org_slug}/registry-quota", "DELETE"),
        ("/v2/organizations/{org_slug}/registry-retention-policy", "GET"),
        ("/v2/organizations/{org_slug}/registry-retention-policy", "PUT"),
        ("/v2/organizations/{org_slug}/registry-retention-policy", "DELETE"),
        (f"{cluster}/registry/retention-policy", "GET"),
        (f"{cluster}/registry/retention-policy", "PUT"),
        (f"{cluster}/registry/retention-policy", "DELETE"),
        (f"{cluster}/registry/retention-policy/dry-run", "POST"),
        (f"{cluster}/registry/cleanup", "POST"), (f"{cluster}/registry/retention-runs", "GET"),
        ("/v2/organizations/{org_slug}", "GET"), ("/v2/access-token", "GET"),
        ("/v2/organizations/{org_slug}/audit_events", "GET"),
        ("/v2/organizations/{org_slug}/audit_events/{event_uuid}", "GET"),
        ("/v2/operator/registry-backends", "GET"), ("/v2/operator/registry-backends", "POST"),
        ("/v2/operator/registry-backends/{name}", "GET"),
        ("/v2/operator/registry-backends/{name}", "PATCH"),
        ("/v2/operator/registry-backends/{name}/garbage-collections", "GET"),
        ("/v2/operator/registry-backends/{name}/garbage-collections", "POST"),
        ("/v2/operator/registry-backends/{name}/garbage-collections/{collection_id}", "GET"),
        ("/v2/operator/registry-signing-keys", "GET"),
        ("/v2/operator/registry-signing-keys/rotate", "POST"),
    }  # fmt: skip
    for path, method in operations:
        described = schema["paths"][path][method.lower()]
        assert described["security"] == [{"apiToken": []}], (path, method)  # never anonymous
        assert {"401", "403", "404", "422", "429"} <= set(described["responses"]), (path, method)
    listed = schema["paths"][base]["get"]
    assert {p["name"] for p in listed["parameters"]} >= {"page", "per_page"}
    assert "Link" in listed["responses"]["200"]["headers"]
    assert "RateLimit-User-Remaining" in listed["responses"]["200"]["headers"]


def test_the_documentation_page_uses_assets_served_here(client) -> None:
    response = client.get("/v2/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn." not in page


# --- create_api_token --------------------------------------------------------------------------


def test_create_api_token_makes_the_organization_user_and_token_and_prints_it_once(db) -> None:
    out, err = StringIO(), StringIO()

    call_command("create_api_token", "acme", "sam", stdout=out, stderr=err)

    secret = out.getvalue().strip()
    token = ApiToken.objects.get()
    assert token.token_hash == ApiToken.hash_secret(secret)
    assert (token.organization.slug, token.user.username) == ("acme", "sam")
    assert token.scopes == [
        "read_clusters", "write_clusters", "read_registries", "write_registries",
        "read_organizations", "read_audit_events",
    ]  # fmt: skip
    assert not token.user.has_usable_password()
    assert "Created organization acme." in err.getvalue()
    assert secret not in err.getvalue()


def test_create_api_token_refuses_unknown_scopes(db) -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command("create_api_token", "acme", "sam", scopes="read_everything", stdout=StringIO())
    assert "Give one or more of: read_clusters" in str(excinfo.value)
    assert ApiToken.objects.count() == 0
    assert not Organization.objects.exists()
    assert not User.objects.exists()
