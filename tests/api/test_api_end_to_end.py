"""The REST API over HTTP, end to end, with real processes: the live server, a Celery worker on
the configured broker, and a Distribution registry. What the curl examples of docs/api.md do."""

from __future__ import annotations

import pytest
import requests
from django.contrib.auth.models import User

from clusters import services
from clusters.models import ApiScope
from tests.support.processes import RegistryProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_hosted_queue_created_over_http_gets_a_registry_whose_url_its_jobs_receive(
    live_server, registry_process: RegistryProcess, start_worker
) -> None:
    start_worker(REGISTRY_URL=registry_process.url, REGISTRY_PUBLIC_HOST=registry_process.host)
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = services.api_token_create(
        user=User.objects.create_user("sam", "sam@example.com"),
        organization=organization,
        description="e2e",
        scopes=[ApiScope.READ_CLUSTERS, ApiScope.WRITE_CLUSTERS, ApiScope.READ_REGISTRIES],
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    api = f"{live_server.url}/v2/organizations/acme"

    cluster = session.post(f"{api}/clusters", json={"name": "Open Source"}, timeout=10)
    assert cluster.status_code == 201, cluster.text
    cluster_url = cluster.json()["url"]
    queue = session.post(
        f"{cluster_url}/queues",
        json={"key": "linux-small", "hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"}},
        timeout=10,
    )
    assert queue.status_code == 201, queue.text
    assert queue.json()["hosted"] is True

    def registry_settled() -> dict[str, object] | None:
        answer = session.get(f"{cluster_url}/registry", timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return body if body["state"] in ("ready", "failed") else None

    registry = wait_until(registry_settled, timeout=30, what="the registry over the API")
    assert registry["state"] == "ready", registry
    assert [event["to_state"] for event in registry["events"]] == [
        "pending", "provisioning", "ready",
    ]  # fmt: skip
    environment = session.get(f"{queue.json()['url']}/environment", timeout=10)
    assert environment.status_code == 200, environment.text
    assert environment.json()["env"]["BUILDKITE_HOSTED_REGISTRY_URL"] == registry["url"]
    assert registry["url"] == f"{registry_process.host}/{registry['namespace']}"
