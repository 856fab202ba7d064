"""The 401/403/404 matrix over every REST API endpoint: no token is 401; a token without the
scope is 403; a token of another organization is 404 for everything of this one, whether it
names this organization or its own, and nothing is read or written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from clusters import services
from clusters.models import ApiScope, Cluster, ClusterAgentToken, Queue
from registries.models import Registry, State

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with {cluster}, {queue}, {token}
    scope: str
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def success(self) -> int:
        if self.method == "delete":
            return 204
        creates = self.method == "post" and self.path.endswith(("/clusters", "/queues", "/tokens"))
        return 201 if creates else 200


ENDPOINTS = [
    Endpoint("get", "/clusters", ApiScope.READ_CLUSTERS),
    Endpoint("post", "/clusters", ApiScope.WRITE_CLUSTERS, {"name": "New"}),
    Endpoint("get", "/clusters/{cluster}", ApiScope.READ_CLUSTERS),
    Endpoint("put", "/clusters/{cluster}", ApiScope.WRITE_CLUSTERS, {"name": "Renamed"}),
    Endpoint("patch", "/clusters/{cluster}", ApiScope.WRITE_CLUSTERS, {"name": "Renamed"}),
    Endpoint("delete", "/clusters/{cluster}", ApiScope.WRITE_CLUSTERS),
    Endpoint("get", "/clusters/{cluster}/queues", ApiScope.READ_CLUSTERS),
    Endpoint("post", "/clusters/{cluster}/queues", ApiScope.WRITE_CLUSTERS, {"key": "new"}),
    Endpoint("get", "/clusters/{cluster}/queues/{queue}", ApiScope.READ_CLUSTERS),
    Endpoint(
        "put", "/clusters/{cluster}/queues/{queue}", ApiScope.WRITE_CLUSTERS, {"description": "x"}
    ),
    Endpoint(
        "patch", "/clusters/{cluster}/queues/{queue}", ApiScope.WRITE_CLUSTERS, {"description": "x"}
    ),
    Endpoint("delete", "/clusters/{cluster}/queues/{queue}", ApiScope.WRITE_CLUSTERS),
    Endpoint("post", "/clusters/{cluster}/queues/{queue}/pause_dispatch", ApiScope.WRITE_CLUSTERS),
    Endpoint("post", "/clusters/{cluster}/queues/{queue}/resume_dispatch", ApiScope.WRITE_CLUSTERS),
    Endpoint("get", "/clusters/{cluster}/queues/{queue}/environment", ApiScope.READ_CLUSTERS),
    Endpoint("get", "/clusters/{cluster}/tokens", ApiScope.READ_CLUSTERS),
    Endpoint("post", "/clusters/{cluster}/tokens", ApiScope.WRITE_CLUSTERS, {"description": "t"}),
    Endpoint("get", "/clusters/{cluster}/tokens/{token}", ApiScope.READ_CLUSTERS),
    Endpoint(
        "put", "/clusters/{cluster}/tokens/{token}", ApiScope.WRITE_CLUSTERS, {"description": "x"}
    ),
    Endpoint(
        "patch", "/clusters/{cluster}/tokens/{token}", ApiScope.WRITE_CLUSTERS, {"description": "x"}
    ),
    Endpoint("delete", "/clusters/{cluster}/tokens/{token}", ApiScope.WRITE_CLUSTERS),
    Endpoint("get", "/clusters/{cluster}/registry", ApiScope.READ_REGISTRIES),
    Endpoint("post", "/clusters/{cluster}/registry/retry", ApiScope.WRITE_REGISTRIES),
]


@pytest.fixture
def acme(api) -> dict[str, str]:
    """Organization acme's cluster, with a hosted queue, an agent token and a failed registry:
    every endpoint above would succeed on them with the right token."""
    cluster = services.cluster_create(organization=api.organization, name="Open Source")
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    token, _ = services.agent_token_create(cluster=cluster, description="agents")
    Registry.objects.filter(cluster=cluster).update(state=State.FAILED)
    return {"cluster": str(cluster.pk), "queue": str(queue.pk), "token": str(token.pk)}


def snapshot() -> tuple[list[Any], ...]:
    """Everything of organization acme that an endpoint could change."""
    in_acme = {"organization__slug": "acme"}
    in_acme_cluster = {"cluster__organization__slug": "acme"}
    return (
        list(
            Cluster.objects.filter(**in_acme).values_list(
                "pk", "name", "description", "default_queue_id"
            )
        ),
        list(
            Queue.objects.filter(**in_acme_cluster).values_list(
                "pk", "key", "description", "dispatch_paused"
            )
        ),
        list(
            ClusterAgentToken.objects.filter(**in_acme_cluster).values_list(
                "pk", "description", "revoked_at"
            )
        ),
        list(Registry.objects.values_list("pk", "cluster_id", "state", "attempts")),
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_without_a_token_every_endpoint_is_401(client, acme, endpoint: Endpoint) -> None:
    before = snapshot()
    path = "/v2/organizations/acme" + endpoint.path.format(**acme)

    response = getattr(client, endpoint.method)(path, content_type="application/json")

    assert response.status_code == 401
    assert response.json() == {
        "message": "Send an API access token as 'Authorization: Bearer <token>'."
    }
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_token_without_the_scope_is_403_and_changes_nothing(
    make_api, acme, endpoint: Endpoint
) -> None:
    lacking = make_api(scopes=[s for s in ApiScope.values if s != endpoint.scope])
    before = snapshot()

    response = lacking.request(endpoint.method, endpoint.path.format(**acme), endpoint.body)

    assert response.status_code == 403
    assert response.json() == {"message": f"This API token needs the {endpoint.scope} scope."}
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_another_organizations_token_finds_nothing_and_changes_nothing(
    other_api, acme, endpoint: Endpoint
) -> None:
    before = snapshot()

    # Naming acme: acme does not exist for this token.
    named = other_api.request(
        endpoint.method, "/v2/organizations/acme" + endpoint.path.format(**acme), endpoint.body
    )
    # Naming its own organization, with acme's ids: they do not exist there.
    own = other_api.request(endpoint.method, endpoint.path.format(**acme), endpoint.body)

    assert named.status_code == 404
    assert named.json() == {"message": "No organization found"}
    if "{cluster}" in endpoint.path:
        assert own.status_code == 404
        assert own.json() == {"message": "No cluster found"}
    else:  # its own cluster list, or a cluster created in its own organization
        assert own.status_code in (200, 201)
        assert "Open Source" not in own.content.decode()
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_with_the_right_token_every_endpoint_succeeds(api, acme, endpoint: Endpoint) -> None:
    """The other side of the matrix: the fixture is one every endpoint works on."""
    if endpoint.path.endswith("/resume_dispatch"):
        services.queue_pause_dispatch(queue=Queue.objects.get(pk=acme["queue"]))
    response = api.request(endpoint.method, endpoint.path.format(**acme), endpoint.body)
    assert response.status_code == endpoint.success, response.content


NESTED = [e for e in ENDPOINTS if "{queue}" in e.path or "{token}" in e.path]


@pytest.mark.parametrize("endpoint", NESTED, ids=str)
def test_a_queue_or_token_is_found_only_under_its_own_cluster(
    api, acme, endpoint: Endpoint
) -> None:
    private = services.cluster_create(organization=api.organization, name="Private")
    before = snapshot()

    response = api.request(
        endpoint.method, endpoint.path.format(**{**acme, "cluster": private.pk}), endpoint.body
    )

    assert response.status_code == 404
    kind = "queue" if "{queue}" in endpoint.path else "token"
    assert response.json() == {"message": f"No {kind} found"}
    assert snapshot() == before
