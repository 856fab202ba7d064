"""The distribution driver's reading of ``GET /v2/``: what is transient, what is a
misconfiguration. The real registry is in test_provisioning; here a stand-in server gives the
answers a healthy registry never does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from registries.drivers import DriverError, RegistryUnavailable
from registries.drivers.distribution import DistributionDriver
from tests.support.http import StandIn, stand_in_server

REGISTRY = {"Docker-Distribution-API-Version": "registry/2.0", "Content-Type": "application/json"}


@pytest.fixture
def server() -> Iterator[StandIn]:
    with stand_in_server() as stand_in:
        yield stand_in


def driver(url: str) -> DistributionDriver:
    return DistributionDriver(api_url=url, public_host="registry.example:5000", timeout=2)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_5xx_timeouts_and_rate_limits_are_transient(server: StandIn, status: int) -> None:
    server.status, server.headers = status, REGISTRY
    with pytest.raises(RegistryUnavailable) as excinfo:
        driver(server.url).provision(namespace="acme/0123")
    assert str(excinfo.value) == f"GET {server.url}/v2/ answered {status}"


@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [
        # A web server, not a registry: no Docker-Distribution-API-Version header.
        (
            200,
            {"Content-Type": "text/html"},
            "did not come from a registry (no 'Docker-Distribution-API-Version: registry/2.0' "
            "header). Check REGISTRY_URL.",
        ),
        (404, REGISTRY, "answered 404; expected 200 or 401 from a registry. Check REGISTRY_URL."),
        # A registry that lets anyone in: it would never ask for our tokens.
        (
            200,
            REGISTRY,
            "answered 200 without a token: the registry lets anyone in. Configure its token "
            "authentication with `python manage.py registry_config`.",
        ),
    ],
)
def test_an_answer_that_is_not_a_registrys_is_a_misconfiguration(
    server: StandIn, status: int, headers: dict[str, str], reason: str
) -> None:
    server.status, server.headers = status, headers
    with pytest.raises(DriverError) as excinfo:
        driver(server.url).provision(namespace="acme/0123")
    assert not isinstance(excinfo.value, RegistryUnavailable)
    assert str(excinfo.value) == f"GET {server.url}/v2/ {reason}"


def test_a_registry_that_sends_clients_elsewhere_for_tokens_is_a_misconfiguration(
    server: StandIn, settings
) -> None:
    challenge = 'Bearer realm="https://auth.example/token",service="other-registry"'
    server.status, server.headers = 401, {**REGISTRY, "WWW-Authenticate": challenge}

    with pytest.raises(DriverError) as excinfo:
        driver(server.url).provision(namespace="acme/0123")

    assert str(excinfo.value) == (
        f"GET {server.url}/v2/ challenges with bearer {{'realm': 'https://auth.example/token', "
        f"'service': 'other-registry'}}, not our token endpoint {{'realm': "
        f"'{settings.REGISTRY_TOKEN_REALM}', 'service': 'hosted-registry'}}. Regenerate its "
        "configuration with `python manage.py registry_config` and restart it."
    )
    assert server.requests == ["/v2/"]


def test_a_registry_that_rejects_our_signature_is_a_misconfiguration(
    server: StandIn, settings
) -> None:
    # It challenges as ours would, but answers 401 to our token too: it trusts another CA.
    challenge = f'Bearer realm="{settings.REGISTRY_TOKEN_REALM}",service="hosted-registry"'
    server.status, server.headers = 401, {**REGISTRY, "WWW-Authenticate": challenge}

    with pytest.raises(DriverError) as excinfo:
        driver(server.url).provision(namespace="acme/0123")

    assert not isinstance(excinfo.value, RegistryUnavailable)
    assert str(excinfo.value).startswith(
        f"The registry at {server.url} rejects tokens signed by our key ("
    )
    assert "rootcertbundle must be our CA certificate" in str(excinfo.value)
    assert server.requests == ["/v2/", "/v2/"]


def test_tag_lists_are_followed_page_by_page(server: StandIn) -> None:
    # Distribution 2.8 ignores ?n= on tag lists, so real registries never page them; 3.x does.
    json_type = {**REGISTRY, "Content-Type": "application/json"}
    next_page = '</v2/acme/0123/base/tags/list?last=b&n=2>; rel="next"'
    server.routes = {
        "/v2/acme/0123/base/tags/list?n=2": (
            200, {**json_type, "Link": next_page}, '{"name": "acme/0123/base", "tags": ["a", "b"]}'
        ),
        "/v2/acme/0123/base/tags/list?last=b&n=2": (
            200, json_type, '{"name": "acme/0123/base", "tags": ["c"]}'
        ),
    }  # fmt: skip
    paged = DistributionDriver(
        api_url=server.url, public_host="registry.example:5000", timeout=2, page_size=2
    )

    assert paged.tags("acme/0123/base", token="t") == ["a", "b", "c"]
    assert server.requests == list(server.routes)


def test_a_catalog_that_answers_404_is_an_error_not_an_empty_namespace(server: StandIn) -> None:
    server.status, server.headers = 404, REGISTRY

    with pytest.raises(DriverError) as excinfo:
        driver(server.url).deprovision(namespace="acme/0123")

    assert str(excinfo.value) == (
        f"GET {server.url}/v2/_catalog?n=100 answered 404; expected 200 from a registry. "
        "Check REGISTRY_URL."
    )
