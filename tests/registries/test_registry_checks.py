"""The registry check that provisioning makes (``GET /v2/`` demands and accepts our tokens) is
reused for ``REGISTRY_CHECK_CACHE_SECONDS`` by the process that made it, and every request of a
thread goes through one keep-alive session (``registries.drivers.distribution``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests

from registries.drivers import RegistryUnavailable
from registries.drivers.distribution import DistributionDriver, recent_checks, shared_session
from tests.support.http import StandIn, stand_in_server


def traffic(url: str) -> tuple[int, int]:
    """(connections opened, requests sent) to ``url``'s host by this thread's session so far."""
    host, port = url.split("://", 1)[1].split(":")
    manager = shared_session().get_adapter(url).poolmanager
    pools = [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118 - not a dict
    ours = [p for p in pools if (p.host, p.port) == (host, int(port))]
    return sum(p.num_connections for p in ours), sum(p.num_requests for p in ours)


@pytest.fixture
def driver(registry_settings) -> DistributionDriver:
    return DistributionDriver.from_settings()


@pytest.fixture
def server() -> Iterator[StandIn]:
    with stand_in_server() as stand_in:
        yield stand_in


def test_provisioning_checks_once_within_the_bound_over_one_connection(driver, settings) -> None:
    settings.REGISTRY_CHECK_CACHE_SECONDS = 3600
    opened, sent = traffic(driver.api_url)

    urls = [driver.provision(namespace=f"acme/{n:012x}") for n in range(3)]

    assert urls == [f"{settings.REGISTRY_PUBLIC_HOST}/acme/{n:012x}" for n in range(3)]
    now_opened, now_sent = traffic(driver.api_url)
    # One check (its two requests: without, then with our token), on a kept-alive connection.
    assert now_sent - sent == 2
    assert now_opened - opened <= 1
    assert driver.provision_cached(namespace="acme/x") == f"{settings.REGISTRY_PUBLIC_HOST}/acme/x"


def test_without_a_bound_every_provisioning_checks(driver, settings) -> None:
    settings.REGISTRY_CHECK_CACHE_SECONDS = 0
    _, sent = traffic(driver.api_url)

    for n in range(3):
        driver.provision(namespace=f"acme/{n:012x}")

    assert traffic(driver.api_url)[1] - sent == 6
    assert driver.provision_cached(namespace="acme/x") is None


def test_verify_now_always_asks_the_registry(driver, settings) -> None:
    settings.REGISTRY_CHECK_CACHE_SECONDS = 3600
    driver.provision(namespace="acme/0")
    _, sent = traffic(driver.api_url)

    driver.check_api()

    assert traffic(driver.api_url)[1] - sent == 2


def test_a_check_made_against_other_token_settings_is_not_reused(driver, settings) -> None:
    settings.REGISTRY_CHECK_CACHE_SECONDS = 3600
    driver.check_api()
    assert driver.provision_cached(namespace="acme/0") is not None

    settings.REGISTRY_TOKEN_SERVICE = "another-service"

    assert driver.provision_cached(namespace="acme/0") is None


def test_a_registry_that_stops_answering_is_checked_again_at_once(
    server: StandIn, settings
) -> None:
    settings.REGISTRY_CHECK_CACHE_SECONDS = 3600
    driver = DistributionDriver(api_url=server.url, public_host="registry.example", timeout=2)
    recent_checks.put(server.url, "GET /v2/: 401 with our token challenge, 200 with our token")
    assert driver.provision_cached(namespace="acme/0") == "registry.example/acme/0"
    server.status, server.headers = 503, {"Docker-Distribution-API-Version": "registry/2.0"}

    with pytest.raises(RegistryUnavailable):
        list(driver.repositories(namespace="acme/0"))  # any request that finds it down

    assert driver.provision_cached(namespace="acme/0") is None
    with pytest.raises(RegistryUnavailable):
        driver.provision(namespace="acme/0")
    assert server.requests[-1] == "/v2/"


def test_each_thread_has_its_own_session_and_keeps_it() -> None:
    here = shared_session()
    there: list[requests.Session] = []
    thread = threading.Thread(target=lambda: there.extend([shared_session(), shared_session()]))
    thread.start()
    thread.join()

    assert shared_session() is here
    assert there[0] is there[1]
    assert there[0] is not here
