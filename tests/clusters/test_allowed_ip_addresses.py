"""Agent token IP allow-lists (``allowed_ip_addresses``): what a list may hold, which address a
request comes from (``TRUSTED_PROXY_COUNT``), and the agent environment endpoint refusing a
token used from outside its list (403 naming the address), over the test client and over HTTP."""

from __future__ import annotations

import pytest
import requests
from django.core.exceptions import ValidationError
from django.test import RequestFactory, override_settings
from rest_framework.exceptions import PermissionDenied
from rest_framework.test import APIClient

from clusters import ip_allow_lists, services
from clusters.interface import agent_token_check_address
from clusters.ip_allow_lists import allows, normalized
from clusters.models import ClusterAgentToken
from controlplane.api.client_ip import client_ip
from tests.clusters.factories import ClusterAgentTokenFactory

URL = "/v3/agent/environment"
SECRET = "bkct_allow-list-secret"
BLOCKS_24 = [f"10.0.{n}.0/24" for n in range(24)]


# --- what a list may hold ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("202.144.0.0/24", "202.144.0.0/24"),
        ("  10.0.0.0/8   192.168.1.0/24 ", "10.0.0.0/8 192.168.1.0/24"),
        ("10.0.0.0/8 10.0.0.0/8", "10.0.0.0/8"),
        ("203.0.113.7", "203.0.113.7/32"),
        (" ".join(BLOCKS_24), " ".join(BLOCKS_24)),
    ],
)  # fmt: skip
def test_a_list_of_up_to_24_ipv4_blocks_is_stored_normalized(value: str, stored: str) -> None:
    assert normalized(value) == stored


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Give at least one IPv4 CIDR block (0.0.0.0/0 allows every address)."),
        ("   ", "Give at least one IPv4 CIDR block (0.0.0.0/0 allows every address)."),
        (None, "Must be a string of space-separated IPv4 CIDR blocks."),
        (["10.0.0.0/8"], "Must be a string of space-separated IPv4 CIDR blocks."),
        ("10.0.0.0/8,192.168.0.0/16", "'10.0.0.0/8,192.168.0.0/16' is not an IPv4 CIDR block "
         "(such as 202.144.0.0/24)."),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IPv4 CIDR block (such as 202.144.0.0/24)."),
        ("example.com", "'example.com' is not an IPv4 CIDR block (such as 202.144.0.0/24)."),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; the block is 10.0.0.0/8."),
        ("2001:db8::/32", "'2001:db8::/32' is IPv6; only IPv4 CIDR blocks are supported."),
        (" ".join(f"10.0.{n}.0/24" for n in range(25)),
         "Give at most 24 CIDR blocks; this list has 25."),
    ],
)  # fmt: skip
def test_anything_else_is_refused_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        normalized(value)
    assert refused.value.messages == [message]


@pytest.mark.parametrize(
    ("allowed", "address", "expected"),
    [
        ("0.0.0.0/0", "203.0.113.7", True),
        ("0.0.0.0/0", "2001:db8::1", True),  # unrestricted: whatever the address
        ("0.0.0.0/0", "", True),
        ("203.0.113.0/24", "203.0.113.7", True),
        ("10.0.0.0/8 203.0.113.0/24", "203.0.113.255", True),
        ("203.0.113.0/24", "203.0.114.1", False),
        ("203.0.113.7/32", "203.0.113.8", False),
        ("203.0.113.0/24", "::ffff:203.0.113.7", True),  # IPv4-mapped
        ("203.0.113.0/24", "2001:db8::1", False),
        ("203.0.113.0/24", "", False),
        ("203.0.113.0/24", "not an address", False),
    ],
)
def test_an_address_is_allowed_only_inside_a_block(allowed, address, expected) -> None:
    assert allows(allowed, address) is expected


# --- the caller's address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "forwarded", "expected"),
    [
        (0, None, "10.1.1.1"),
        (0, "198.51.100.9", "10.1.1.1"),  # no proxy is trusted: the header is anyone's
        (1, "198.51.100.9", "198.51.100.9"),
        (1, "6.6.6.6, 198.51.100.9", "198.51.100.9"),  # the client's own entries are skipped
        (2, "198.51.100.9, 10.2.2.2", "198.51.100.9"),
        (1, None, "10.1.1.1"),  # not through the proxy: the proxy-side address, never a chosen one
        (3, "198.51.100.9", "198.51.100.9"),  # fewer hops than proxies: the leftmost
        (1, " , 198.51.100.9 ,", "198.51.100.9"),
    ],
)
def test_the_client_address_is_read_through_the_trusted_proxies_only(
    trusted, forwarded, expected
) -> None:
    headers = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
    request = RequestFactory().get("/", REMOTE_ADDR="10.1.1.1", **headers)
    with override_settings(TRUSTED_PROXY_COUNT=trusted):
        assert client_ip(request) == expected


# --- enforced on the agent environment endpoint -----------------------------------------------


@pytest.fixture
def restricted(db, hosted_queue) -> ClusterAgentToken:
    token: ClusterAgentToken = ClusterAgentTokenFactory(
        cluster=hosted_queue.cluster, secret=SECRET, allowed_ip_addresses="203.0.113.0/24"
    )
    return token


def agent(**extra: str) -> APIClient:
    client = APIClient(**extra)
    client.credentials(HTTP_AUTHORIZATION=f"Token {SECRET}")
    return client


def test_the_seam_applies_the_tokens_list(restricted) -> None:
    agent_token_check_address(restricted, RequestFactory().get("/", REMOTE_ADDR="203.0.113.7"))
    with pytest.raises(PermissionDenied, match="198.51.100.1"):
        agent_token_check_address(restricted, RequestFactory().get("/", REMOTE_ADDR="198.51.100.1"))


def test_inside_the_list_the_agent_gets_its_environment(restricted) -> None:
    response = agent(REMOTE_ADDR="203.0.113.7").get(URL, {"queue": "linux-small"})

    assert response.status_code == 200
    assert response.json()["queue"]["key"] == "linux-small"


def test_outside_the_list_the_agent_gets_403_naming_the_address(restricted, caplog) -> None:
    response = agent(REMOTE_ADDR="198.51.100.1").get(URL, {"queue": "linux-small"})

    assert response.status_code == 403
    assert response.json() == {
        "message": "This agent token may not be used from 198.51.100.1: the address is outside "
        "the token's allowed_ip_addresses."
    }
    assert response["Content-Type"] == "application/json"
    refused = [r for r in caplog.records if r.getMessage() == "agent_token.address_refused"]
    assert [(r.address, r.token_id) for r in refused] == [("198.51.100.1", str(restricted.pk))]


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(restricted) -> None:
    client = agent(REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="203.0.113.7")

    assert client.get(URL, {"queue": "linux-small"}).status_code == 403


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_trusted_proxy_the_forwarded_address_decides(restricted) -> None:
    inside = agent(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    outside = agent(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.7, 198.51.100.1")

    assert inside.get(URL, {"queue": "linux-small"}).status_code == 200
    response = outside.get(URL, {"queue": "linux-small"})
    assert response.status_code == 403
    assert "198.51.100.1" in response.json()["message"]


def test_a_narrowed_list_applies_at_the_next_use(restricted) -> None:
    client = agent(REMOTE_ADDR="203.0.113.7")
    assert client.get(URL, {"queue": "linux-small"}).status_code == 200

    services.agent_token_update(token=restricted, allowed_ip_addresses="203.0.113.8/32")

    assert client.get(URL, {"queue": "linux-small"}).status_code == 403


def test_a_bad_token_is_still_401_not_403(restricted) -> None:
    client = APIClient(REMOTE_ADDR="198.51.100.1")
    client.credentials(HTTP_AUTHORIZATION="Token bkct_wrong")

    assert client.get(URL, {"queue": "linux-small"}).status_code == 401


# --- over HTTP, against the running service ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_over_http_the_connection_address_is_checked(live_server, hosted_queue) -> None:
    """The live server sees 127.0.0.1: a token limited elsewhere is refused, one that includes
    it is served, and a forged X-Forwarded-For changes nothing."""
    outside = ClusterAgentTokenFactory(
        cluster=hosted_queue.cluster, secret="bkct_outside", allowed_ip_addresses="203.0.113.0/24"
    )
    ClusterAgentTokenFactory(
        cluster=hosted_queue.cluster, secret="bkct_inside", allowed_ip_addresses="127.0.0.0/8"
    )
    url = f"{live_server.url}{URL}?queue=linux-small"

    refused = requests.get(
        url,
        headers={"Authorization": "Token bkct_outside", "X-Forwarded-For": "203.0.113.7"},
        timeout=10,
    )
    served = requests.get(url, headers={"Authorization": "Token bkct_inside"}, timeout=10)

    assert refused.status_code == 403
    assert refused.json() == {"message": ip_allow_lists.refusal("127.0.0.1")}
    assert served.status_code == 200
    assert served.json()["cluster_id"] == str(outside.cluster_id)


@pytest.mark.django_db(transaction=True)
def test_over_http_behind_a_trusted_proxy(live_server, hosted_queue, settings) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    ClusterAgentTokenFactory(
        cluster=hosted_queue.cluster, secret=SECRET, allowed_ip_addresses="203.0.113.0/24"
    )
    url = f"{live_server.url}{URL}?queue=linux-small"

    def get(forwarded: str) -> requests.Response:
        headers = {"Authorization": f"Token {SECRET}", "X-Forwarded-For": forwarded}
        return requests.get(url, headers=headers, timeout=10)

    assert get("203.0.113.7").status_code == 200
    assert get("203.0.113.7, 198.51.100.1").json() == {
        "message": ip_allow_lists.refusal("198.51.100.1")
    }
