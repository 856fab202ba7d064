"""Tenant-visible registry errors name the failure, not internal hosts or library text (issue 13,
item 6); operators keep the detail in the console and the logs.

Over HTTP against the live server, with a registry that is down: the REST API's registry resource
(``last_error``, conditions, events, the canary) says "The registry did not answer (connection
refused)", and the console's registry page shows the request and what urllib3 said."""

from __future__ import annotations

import json
import re

import pytest
import requests
from django.contrib.auth.models import User

from clusters import services
from clusters.models import ApiScope, Cluster
from registries.models import Registry, State
from registries.services import registry_canary, registry_provision
from tests.support.processes import closed_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

#: Text that belongs to the operators: library names and the words of a connection failure.
LIBRARY_TEXT = re.compile(
    r"HTTPConnectionPool|urllib3|NewConnectionError|Max retries|Errno|requests\.|"
    r"ConnectionError|ValidationError|Traceback",
)
DOWN = "The registry did not answer (connection refused)"


def api_session(organization) -> requests.Session:
    _, secret = services.api_token_create(
        user=User.objects.create_user("sam", "sam@example.com"),
        organization=organization,
        description="tenant",
        scopes=[ApiScope.READ_CLUSTERS, ApiScope.READ_REGISTRIES],
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    return session


def registry_body(live_server, session: requests.Session, cluster: Cluster) -> str:
    url = f"{live_server.url}/v2/organizations/acme/clusters/{cluster.pk}/registry"
    answer = session.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.text


def admin_page(live_server, client, registry: Registry) -> str:
    """The console's page of ``registry``, over HTTP, as a logged-in operator."""
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    page = requests.get(
        f"{live_server.url}/admin/registries/registry/{registry.pk}/change/",
        cookies={"sessionid": client.cookies["sessionid"].value},
        timeout=10,
    )
    assert page.status_code == 200, page.text[:500]
    return page.text


def test_a_registry_that_does_not_answer_is_named_without_its_host_to_tenants(
    live_server, client, settings, broker_queue
) -> None:
    down = closed_url()
    host = down.removeprefix("http://")
    settings.REGISTRY_URL = down
    settings.REGISTRY_PROVISION_MAX_ATTEMPTS = 2
    organization = services.organization_create(slug="acme", name="Acme")
    cluster = services.cluster_create(organization=organization, name="A")
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    registry = Registry.objects.get(cluster=cluster)
    registry_provision(registry_id=registry.pk)  # retried
    registry_provision(registry_id=registry.pk)  # failed

    body = registry_body(live_server, api_session(organization), cluster)

    registry.refresh_from_db()
    assert registry.state == State.FAILED
    answer = json.loads(body)
    assert answer["last_error"] == DOWN
    assert [c["message"] for c in answer["conditions"]] == [
        DOWN,
        f"gave up after 2 attempts: {DOWN}",
    ]
    messages = [e["message"] for e in answer["events"]]
    assert f"will retry: {DOWN}" in messages
    assert messages[-1] == f"gave up after 2 attempts: {DOWN}"
    assert host not in body
    assert "127.0.0.1" not in body
    assert not LIBRARY_TEXT.search(body), LIBRARY_TEXT.search(body)
    assert "detail" not in body
    # The console keeps what operators need to find the fault.
    page = admin_page(live_server, client, registry)
    assert f"GET {down}/v2/ failed: HTTPConnectionPool(host=&#x27;127.0.0.1&#x27;" in page
    assert "Connection refused" in page


def test_a_failing_canary_is_named_without_its_host_to_tenants(
    live_server, client, settings, ready_cluster
) -> None:
    a = ready_cluster("A")
    down = closed_url()
    settings.REGISTRY_URL = down

    result = registry_canary(registry_id=a.registry.pk)
    body = registry_body(live_server, api_session(a.cluster.organization), a.cluster)

    assert result is not None
    assert not result.ok
    answer = json.loads(body)
    assert answer["canary"]["message"] == DOWN
    ready = next(c for c in answer["conditions"] if c["type"] == "Ready")
    assert ready["message"] == f"The health canary failed: {DOWN}"
    assert down.removeprefix("http://") not in body
    assert not LIBRARY_TEXT.search(body), LIBRARY_TEXT.search(body)
    page = admin_page(live_server, client, a.registry)
    assert f"POST {down}/v2/{a.namespace}/controlplane-canary/blobs/uploads/ failed: " in page
