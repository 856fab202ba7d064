"""``/v2/organizations/{org}/clusters/{cluster}/tokens``: cluster agent tokens, whose secret is
shown once, in the create response, and is stored only as its SHA-256."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from clusters import services
from clusters.models import Cluster, ClusterAgentToken
from tests.api.expected import TIMESTAMP, user_body
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

AGENT_ENVIRONMENT = "/v3/agent/environment"


def tokens_path(cluster: Cluster) -> str:
    return f"/clusters/{cluster.pk}/tokens"


def ts(value: dt.datetime | None) -> str | None:
    """A timestamp as the API writes it: UTC, with milliseconds."""
    if value is None:
        return None
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def token_body(api, cluster: Cluster, token: ClusterAgentToken, body: dict[str, Any]) -> dict:
    """What the API shows of ``token``; the user's avatar and join date come from ``body``."""
    cluster_url = f"http://testserver/v2/organizations/acme/clusters/{cluster.pk}"
    return {
        "id": str(token.pk),
        "graphql_id": base64.b64encode(f"ClusterToken---{token.pk}".encode()).decode(),
        "description": token.description,
        "allowed_ip_addresses": token.allowed_ip_addresses,
        "expires_at": ts(token.expires_at),
        "url": f"{cluster_url}/tokens/{token.pk}",
        "cluster_url": cluster_url,
        "created_at": ts(token.created_at),
        "created_by": None if token.created_by_id is None else user_body(api, body["created_by"]),
    }


def agent(secret: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {secret}")


# --- create --------------------------------------------------------------------------------


def test_creating_a_token_answers_201_with_the_secret_and_stores_only_its_hash(
    api, cluster
) -> None:
    response = api.post(tokens_path(cluster), {"description": "Linux agents"})

    assert response.status_code == 201
    body = response.json()
    token = ClusterAgentToken.objects.get()
    secret = body["token"]
    assert body == {**token_body(api, cluster, token, body), "token": secret}
    assert body["description"] == "Linux agents"
    assert body["expires_at"] is None
    assert TIMESTAMP.fullmatch(body["created_at"])
    assert body["allowed_ip_addresses"] == "0.0.0.0/0"
    assert token.token_hash == ClusterAgentToken.hash_secret(secret)
    assert secret not in {token.token_hash, token.token_prefix, token.description}
    assert secret.startswith(token.token_prefix)
    assert (token.cluster, token.created_by) == (cluster, api.token.user)


def test_the_secret_is_never_returned_again(api, cluster) -> None:
    created = api.post(tokens_path(cluster), {"description": "Linux agents"}).json()
    secret, path = created["token"], f"{tokens_path(cluster)}/{created['id']}"

    responses = [
        api.get(path),
        api.get(tokens_path(cluster)),
        api.put(path, {"description": "renamed"}),
        api.patch(path, {"description": "renamed again"}),
    ]

    for response in responses:
        assert response.status_code == 200
        assert secret not in response.content.decode()
    assert "token" not in responses[0].json()
    assert "token" not in responses[1].json()[0]


def test_a_token_with_an_expiry_at_least_10_minutes_ahead_is_created(api, cluster) -> None:
    expires_at = timezone.now().replace(microsecond=250_000) + dt.timedelta(minutes=11)

    response = api.post(
        tokens_path(cluster), {"description": "CI", "expires_at": expires_at.isoformat()}
    )

    assert response.status_code == 201
    assert response.json()["expires_at"] == (
        expires_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.250Z")
    )
    assert ClusterAgentToken.objects.get().expires_at == expires_at


@pytest.mark.parametrize(
    "ahead", [dt.timedelta(minutes=-5), dt.timedelta(0), dt.timedelta(minutes=9, seconds=50)]
)
def test_an_expiry_less_than_10_minutes_ahead_is_422_and_writes_nothing(
    api, cluster, ahead
) -> None:
    expires_at = (timezone.now() + ahead).isoformat()

    response = api.post(tokens_path(cluster), {"description": "CI", "expires_at": expires_at})

    assert response.status_code == 422
    assert response.json() == {
        "message": "Validation failed: expires_at must be at least 10 minutes in the future",
        "errors": [
            {"field": "expires_at", "message": "Must be at least 10 minutes in the future."}
        ],
    }
    assert ClusterAgentToken.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Validation failed: description this field is required"),
        ({"description": ""}, "Validation failed: description this field may not be blank"),
        ({"description": "x" * 256}, "Validation failed: description ensure this field has no "
         "more than 255 characters"),
        ({"description": "CI", "expires_at": "tomorrow"}, "Validation failed: expires_at datetime "
         "has wrong format. Use one of these formats instead: "
         "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]"),
        ({"description": "CI", "allowed_ip_addresses": "10.0.0.0/8,192.168.0.0/16"},
         "Validation failed: allowed_ip_addresses '10.0.0.0/8,192.168.0.0/16' is not an IPv4 "
         "CIDR block (such as 202.144.0.0/24)"),
    ],
)  # fmt: skip
def test_an_invalid_token_is_422_and_writes_nothing(api, cluster, body, message) -> None:
    response = api.post(tokens_path(cluster), body)

    assert response.status_code == 422
    assert response.json()["message"] == message
    assert ClusterAgentToken.objects.count() == 0


def test_a_token_for_an_unknown_cluster_is_404_and_writes_nothing(api) -> None:
    response = api.post("/clusters/00000000-0000-0000-0000-000000000000/tokens", {})

    assert response.status_code == 404
    assert response.json() == {"message": "No cluster found"}
    assert ClusterAgentToken.objects.count() == 0


# --- read ----------------------------------------------------------------------------------


def test_reading_a_token(api, cluster) -> None:
    token_id = api.post(tokens_path(cluster), {"description": "Linux agents"}).json()["id"]

    response = api.get(f"{tokens_path(cluster)}/{token_id}")

    assert response.status_code == 200
    body = response.json()
    assert body == token_body(api, cluster, ClusterAgentToken.objects.get(), body)


def test_the_list_has_the_clusters_active_tokens_newest_first_paginated(api, cluster) -> None:
    other_cluster = services.cluster_create(organization=api.organization, name="Other")
    services.agent_token_create(cluster=other_cluster, description="elsewhere")
    now = timezone.now()
    for index, description in enumerate(["oldest", "middle", "newest"]):
        token, _ = services.agent_token_create(cluster=cluster, description=description)
        ClusterAgentToken.objects.filter(pk=token.pk).update(
            created_at=now + dt.timedelta(seconds=index)
        )
    expired, _ = services.agent_token_create(cluster=cluster, description="expired")
    ClusterAgentToken.objects.filter(pk=expired.pk).update(expires_at=now)
    revoked, _ = services.agent_token_create(cluster=cluster, description="revoked")
    services.agent_token_revoke(token=revoked)

    first = api.get(tokens_path(cluster), per_page=2)
    second = api.get(tokens_path(cluster), per_page=2, page=2)

    assert [t["description"] for t in first.json()] == ["newest", "middle"]
    assert [t["description"] for t in second.json()] == ["oldest"]
    page2 = f"http://testserver{api.base}{tokens_path(cluster)}?page=2&per_page=2"
    assert first["Link"] == f'<{page2}>; rel="next", <{page2}>; rel="last"'
    body = second.json()[0]
    oldest = ClusterAgentToken.objects.get(description="oldest")
    assert body == token_body(api, cluster, oldest, body)
    assert body["created_by"] is None  # created through the service, by no one


def test_listing_1_or_50_tokens_takes_the_same_number_of_queries(api, cluster) -> None:
    def queries() -> int:
        # The API token (with its user and organization), the cluster, the count, the page.
        with expected_queries("api:tokens") as captured:
            response = api.get(tokens_path(cluster), per_page=100)
        assert response.status_code == 200
        assert all(token["created_by"] is not None for token in response.json())
        return len(captured)

    services.agent_token_create(cluster=cluster, description="t", created_by=api.token.user)
    one = queries()
    for index in range(49):
        services.agent_token_create(
            cluster=cluster, description=f"t{index}", created_by=api.token.user
        )
    assert queries() == one


def test_reading_a_token_takes_a_fixed_number_of_queries(api, cluster) -> None:
    token_id = api.post(tokens_path(cluster), {"description": "CI"}).json()["id"]
    # The API token (with its user and organization), the cluster, the token (with its creator).
    with expected_queries("api:token"):
        assert api.get(f"{tokens_path(cluster)}/{token_id}").status_code == 200


@pytest.mark.parametrize("token_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_token_is_404(api, cluster, token_id) -> None:
    response = api.get(f"{tokens_path(cluster)}/{token_id}")
    assert response.status_code == 404
    assert response.json() == {"message": "No token found"}


def test_a_token_is_found_only_under_its_own_cluster(api, cluster) -> None:
    token, _ = services.agent_token_create(cluster=cluster, description="CI")
    other = services.cluster_create(organization=api.organization, name="Other")

    response = api.get(f"{tokens_path(other)}/{token.pk}")

    assert response.status_code == 404
    assert response.json() == {"message": "No token found"}


def test_an_expired_token_is_not_found(api, cluster) -> None:
    token, _ = services.agent_token_create(cluster=cluster, description="CI")
    ClusterAgentToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())

    assert api.get(f"{tokens_path(cluster)}/{token.pk}").status_code == 404
    assert api.get(tokens_path(cluster)).json() == []


# --- update --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_both_change_the_description_only(api, cluster, method) -> None:
    expires_at = (timezone.now() + dt.timedelta(days=1)).isoformat()
    created = api.post(tokens_path(cluster), {"description": "CI", "expires_at": expires_at}).json()
    before = ClusterAgentToken.objects.get()

    response = getattr(api, method)(
        f"{tokens_path(cluster)}/{created['id']}", {"description": "Linux agents"}
    )

    assert response.status_code == 200
    body = response.json()
    after = ClusterAgentToken.objects.get()
    assert body == token_body(api, cluster, after, body)
    assert body["description"] == "Linux agents"
    assert body["expires_at"] == created["expires_at"]
    assert after.description == "Linux agents"
    assert (after.token_hash, after.expires_at) == (before.token_hash, before.expires_at)


def test_an_update_without_a_description_changes_nothing(api, cluster) -> None:
    created = api.post(tokens_path(cluster), {"description": "CI"}).json()

    response = api.patch(f"{tokens_path(cluster)}/{created['id']}", {})

    assert response.status_code == 200
    assert response.json()["description"] == "CI"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"description": ""}, "Validation failed: description this field may not be blank"),
        ({"expires_at": "2099-01-01T00:00:00Z"}, "Validation failed: expires_at a token's expiry "
         "cannot be changed; create a new token instead"),
        ({"allowed_ip_addresses": "2001:db8::/32"}, "Validation failed: allowed_ip_addresses "
         "'2001:db8::/32' is IPv6; only IPv4 CIDR blocks are supported"),
    ],
)  # fmt: skip
def test_an_invalid_update_is_422_and_changes_nothing(api, cluster, body, message) -> None:
    token, _ = services.agent_token_create(cluster=cluster, description="CI")

    response = api.put(f"{tokens_path(cluster)}/{token.pk}", body)

    assert response.status_code == 422
    assert response.json()["message"] == message
    token.refresh_from_db()
    assert (token.description, token.expires_at) == ("CI", None)


# --- revoke --------------------------------------------------------------------------------


def test_revoking_a_token_is_204_then_it_is_gone_and_no_longer_authenticates_agents(
    api, cluster
) -> None:
    services.queue_create(cluster=cluster, key="default")
    created = api.post(tokens_path(cluster), {"description": "CI"}).json()
    path = f"{tokens_path(cluster)}/{created['id']}"
    assert agent(created["token"]).get(AGENT_ENVIRONMENT, {"queue": "default"}).status_code == 200

    response = api.delete(path)

    assert response.status_code == 204
    assert response.content == b""
    for gone in (api.get(path), api.put(path, {"description": "x"}), api.delete(path)):
        assert gone.status_code == 404
        assert gone.json() == {"message": "No token found"}
    assert api.get(tokens_path(cluster)).json() == []
    refused = agent(created["token"]).get(AGENT_ENVIRONMENT, {"queue": "default"})
    assert refused.status_code == 401
    assert refused.json() == {"message": "Invalid, expired or revoked agent token."}
    token = ClusterAgentToken.objects.get()  # kept, as the record
    assert token.revoked_at is not None
    assert token.description == "CI"


def test_revoking_one_token_leaves_the_others_working(api, cluster) -> None:
    services.queue_create(cluster=cluster, key="default")
    kept, kept_secret = services.agent_token_create(cluster=cluster, description="kept")
    revoked, _ = services.agent_token_create(cluster=cluster, description="revoked")

    assert api.delete(f"{tokens_path(cluster)}/{revoked.pk}").status_code == 204

    assert [t["id"] for t in api.get(tokens_path(cluster)).json()] == [str(kept.pk)]
    assert agent(kept_secret).get(AGENT_ENVIRONMENT, {"queue": "default"}).status_code == 200
