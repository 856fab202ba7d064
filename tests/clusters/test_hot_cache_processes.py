"""Across processes, a revoked agent token stops working within the caches' bound
(``HOT_CACHE_SECONDS``), with nothing but the bound: two production web processes (gunicorn,
``deploy/gunicorn.conf.py``) on the tests' database, each warm with the agent environment and a
registry token for the token, which the test process then revokes. Once the bound has passed,
both refuse it at both endpoints."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings

from clusters import services
from registries.key_encryption import derived_key
from registries.models import State
from tests.registries.factories import RegistryFactory
from tests.support.processes import Gunicorns, database_url_for_children, free_port
from tests.support.stack import inherited_environment

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
#: The bound the web processes run with.
BOUND = 2


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """``start()`` starts one more web process (one gunicorn worker) and returns its URL."""
    servers = Gunicorns(tmp_path)

    def start() -> str:
        port = free_port()
        environment = {
            **inherited_environment(),
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url_for_children(),
            "REDIS_URL": "redis://127.0.0.1:1/0",  # not used by these endpoints
            "REGISTRY_TOKEN_REALM": "http://127.0.0.1:1/registry/token",
            "REGISTRY_KEYS_DIR": settings.REGISTRY_KEYS_DIR,
            # The signing keys in the tests' database were encrypted with this process's KEK.
            "REGISTRY_KEYS_ENCRYPTION_KEYS": derived_key().decode(),
            "CONTROLPLANE_VAR_DIR": str(tmp_path / f"var-{port}"),
            "HOT_CACHE_SECONDS": str(BOUND),
            "PORT": str(port),
            "GUNICORN_BIND_HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "1",
        }
        return servers.start(environment)

    try:
        yield start
    finally:
        servers.stop()


def test_a_revoked_token_is_refused_by_every_process_once_the_bound_has_passed(
    web, hosted_queue
) -> None:
    cluster = hosted_queue.cluster
    registry = RegistryFactory(cluster=cluster, state=State.READY)
    token, secret = services.agent_token_create(cluster=cluster, description="agents")
    basic = "Basic " + base64.b64encode(f"job:{secret}".encode()).decode()

    def environment(url: str) -> int:
        return requests.get(
            f"{url}/v3/agent/environment",
            params={"queue": hosted_queue.key},
            headers={"Authorization": f"Token {secret}"},
            timeout=10,
        ).status_code

    def registry_token(url: str) -> int:
        return requests.get(
            f"{url}/registry/token",
            params={
                "service": settings.REGISTRY_TOKEN_SERVICE,
                "scope": f"repository:{registry.namespace}/base:pull",
            },
            headers={"Authorization": basic},
            timeout=10,
        ).status_code

    urls = [web(), web()]
    for url in urls:  # each process reads the token once, then answers from its cache
        assert [environment(url), environment(url)] == [200, 200]
        assert [registry_token(url), registry_token(url)] == [200, 200]

    services.agent_token_revoke(token=token)  # in this process: the web processes hear nothing
    time.sleep(BOUND + 0.5)

    assert [environment(url) for url in urls] == [401, 401]
    assert [registry_token(url) for url in urls] == [401, 401]
