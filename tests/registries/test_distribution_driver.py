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


@pytest.mark.parametrize("status", [200, 401])
def test_a_registry_answering_v2_gives_the_namespace_url(server: StandIn, status: int) -> None:
    server.status, server.headers = status, REGISTRY
    assert driver(server.url).provision(namespace="acme/0123") == "registry.example:5000/acme/0123"
    assert server.requests == ["/v2/"]


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
