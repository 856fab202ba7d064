"""``allowed_ip_addresses`` of cluster agent tokens over the REST API, as Buildkite has it: set on
create and update (space-separated IPv4 CIDR blocks, at most 24; 422 otherwise), shown in every
token response, and enforced where the token is used; and in the console."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.test import Client

from clusters import services
from clusters.ip_allow_lists import refusal
from clusters.models import Cluster, ClusterAgentToken

pytestmark = pytest.mark.django_db

BLOCKS_25 = " ".join(f"10.0.{n}.0/24" for n in range(25))


def tokens_path(cluster: Cluster) -> str:
    return f"/clusters/{cluster.pk}/tokens"


def test_a_token_created_with_an_allow_list_stores_and_shows_it(api, cluster) -> None:
    response = api.post(
        tokens_path(cluster),
        {"description": "CI", "allowed_ip_addresses": "202.144.0.0/24  203.0.113.7"},
    )

    assert response.status_code == 201
    assert response.json()["allowed_ip_addresses"] == "202.144.0.0/24 203.0.113.7/32"
    token = ClusterAgentToken.objects.get()
    assert token.allowed_ip_addresses == "202.144.0.0/24 203.0.113.7/32"
    shown = api.get(f"{tokens_path(cluster)}/{token.pk}").json()
    assert shown["allowed_ip_addresses"] == "202.144.0.0/24 203.0.113.7/32"
    assert api.get(tokens_path(cluster)).json()[0]["allowed_ip_addresses"] == (
        "202.144.0.0/24 203.0.113.7/32"
    )


def test_null_or_no_allow_list_is_every_address(api, cluster) -> None:
    first = api.post(tokens_path(cluster), {"description": "a", "allowed_ip_addresses": None})
    second = api.post(tokens_path(cluster), {"description": "b"})

    assert first.json()["allowed_ip_addresses"] == "0.0.0.0/0"
    assert second.json()["allowed_ip_addresses"] == "0.0.0.0/0"


def test_an_update_changes_the_allow_list_and_only_what_is_sent(api, cluster) -> None:
    token, _ = services.agent_token_create(
        cluster=cluster, description="CI", allowed_ip_addresses="10.0.0.0/8"
    )
    path = f"{tokens_path(cluster)}/{token.pk}"

    narrowed = api.patch(path, {"allowed_ip_addresses": "10.1.0.0/16"})
    renamed = api.put(path, {"description": "Linux agents"})
    unchanged = api.put(path, {"allowed_ip_addresses": None})

    assert narrowed.status_code == 200
    assert narrowed.json()["allowed_ip_addresses"] == "10.1.0.0/16"
    assert renamed.json()["allowed_ip_addresses"] == "10.1.0.0/16"
    assert unchanged.json()["description"] == "Linux agents"
    token.refresh_from_db()
    assert (token.description, token.allowed_ip_addresses) == ("Linux agents", "10.1.0.0/16")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Give at least one IPv4 CIDR block (0.0.0.0/0 allows every address)"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; the block is 10.0.0.0/8"),
        ("2001:db8::/32", "'2001:db8::/32' is IPv6; only IPv4 CIDR blocks are supported"),
        (BLOCKS_25, "Give at most 24 CIDR blocks; this list has 25"),
        (["10.0.0.0/8"], "Must be a string of space-separated IPv4 CIDR blocks"),
        (167772160, "Must be a string of space-separated IPv4 CIDR blocks"),
        (True, "Must be a string of space-separated IPv4 CIDR blocks"),
    ],
)
def test_anything_but_up_to_24_ipv4_blocks_is_422_on_create_and_update(
    api, cluster, value: Any, message: str
) -> None:
    token, _ = services.agent_token_create(cluster=cluster, description="CI")

    created = api.post(tokens_path(cluster), {"description": "new", "allowed_ip_addresses": value})
    updated = api.patch(f"{tokens_path(cluster)}/{token.pk}", {"allowed_ip_addresses": value})

    expected = {
        "message": f"Validation failed: allowed_ip_addresses {message[:1].lower()}{message[1:]}",
        "errors": [{"field": "allowed_ip_addresses", "message": f"{message}."}],
    }
    assert (created.status_code, created.json()) == (422, expected)
    assert (updated.status_code, updated.json()) == (422, expected)
    assert list(ClusterAgentToken.objects.values_list("allowed_ip_addresses", flat=True)) == [
        "0.0.0.0/0"
    ]


def test_the_console_sets_and_changes_the_allow_list(operator: Client, cluster) -> None:
    operator.post(
        "/admin/clusters/clusteragenttoken/add/",
        {"cluster": cluster.pk, "description": "CI", "expires_at_0": "", "expires_at_1": "",
         "allowed_ip_addresses": "10.0.0.0/8"},
    )  # fmt: skip
    token = ClusterAgentToken.objects.get()
    assert token.allowed_ip_addresses == "10.0.0.0/8"

    refused = operator.post(
        f"/admin/clusters/clusteragenttoken/{token.pk}/change/",
        {"description": "CI", "allowed_ip_addresses": "10.0.0.0/33"},
    )
    assert refused.status_code == 200
    assert "is not an IPv4 CIDR block" in refused.text
    changed = operator.post(
        f"/admin/clusters/clusteragenttoken/{token.pk}/change/",
        {"description": "CI", "allowed_ip_addresses": "10.0.0.0/8 192.168.0.0/16"},
    )
    assert changed.status_code == 302
    token.refresh_from_db()
    assert token.allowed_ip_addresses == "10.0.0.0/8 192.168.0.0/16"


@pytest.mark.django_db(transaction=True)
def test_over_http_an_allow_list_set_through_the_api_is_enforced(live_server, api, cluster) -> None:
    """Create a token limited to another network over HTTP; the agent endpoint refuses it from
    127.0.0.1 (403 naming the address); widen the list over HTTP; it is served."""
    services.queue_create(cluster=cluster, key="linux-small")
    base = f"{live_server.url}/v2/organizations/acme/clusters/{cluster.pk}/tokens"
    headers = {"Authorization": f"Bearer {api.secret}"}

    created = requests.post(
        base,
        json={"description": "CI", "allowed_ip_addresses": "203.0.113.0/24"},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201
    assert created.json()["allowed_ip_addresses"] == "203.0.113.0/24"
    agent = {"Authorization": f"Token {created.json()['token']}"}
    environment = f"{live_server.url}/v3/agent/environment?queue=linux-small"

    refused = requests.get(environment, headers=agent, timeout=10)
    assert (refused.status_code, refused.json()) == (403, {"message": refusal("127.0.0.1")})

    invalid = requests.put(
        f"{base}/{created.json()['id']}",
        json={"allowed_ip_addresses": "127.0.0.1/8"},
        headers=headers,
        timeout=10,
    )
    assert invalid.status_code == 422
    widened = requests.put(
        f"{base}/{created.json()['id']}",
        json={"allowed_ip_addresses": "203.0.113.0/24 127.0.0.0/8"},
        headers=headers,
        timeout=10,
    )
    assert widened.json()["allowed_ip_addresses"] == "203.0.113.0/24 127.0.0.0/8"
    assert requests.get(environment, headers=agent, timeout=10).status_code == 200
