"""The 401/403/404 matrix over every REST API endpoint: no token is 401; a token without the
scope is 403; a token of another organization is 404 for everything of this one, whether it
names this organization or its own, and nothing is read or written.

The endpoints come from the URL configuration: every route under ``v2/organizations/<org_slug>/``
and every method its view answers, so a new endpoint is in the matrix without editing a list.
Only a request body is looked up by hand (``BODIES``), and a write without an entry fails."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from clusters import services
from clusters.api.base import READ_METHODS, answered_methods
from clusters.audit import AuditEvent
from clusters.checks import organization_routes
from clusters.models import ApiScope, Cluster, ClusterAgentToken, Queue
from registries.inventory import Tag
from registries.models import Registry, State
from registries.quotas import RegistryQuota
from registries.retention import RetentionPolicy, RetentionRun
from tests.registries.factories import inventory_push

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


#: The endpoints as they were listed by hand before the matrix came from the URL configuration:
#: a floor, so that the generator cannot lose one (test_no_endpoint_is_lost).
LISTED = [
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


#: The route parameters, and the fixture's ids that fill them.
PARAMETERS = {
    "cluster_id": "cluster",
    "queue_id": "queue",
    "token_id": "token",
    "repository": "repository",
    "tag": "tag",
    "event_uuid": "event",
}
ORGANIZATION = "v2/organizations/<str:org_slug>"

#: What each write sends, by method and path; None: no body. A write that is not here fails
#: test_every_write_has_a_body_entry.
BODIES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("post", "/clusters"): {"name": "New"},
    ("put", "/clusters/{cluster}"): {"name": "Renamed"},
    ("patch", "/clusters/{cluster}"): {"name": "Renamed"},
    ("post", "/clusters/{cluster}/queues"): {"key": "new"},
    ("put", "/clusters/{cluster}/queues/{queue}"): {"description": "x"},
    ("patch", "/clusters/{cluster}/queues/{queue}"): {"description": "x"},
    ("post", "/clusters/{cluster}/queues/{queue}/pause_dispatch"): None,
    ("post", "/clusters/{cluster}/queues/{queue}/resume_dispatch"): None,
    ("post", "/clusters/{cluster}/tokens"): {"description": "t"},
    ("put", "/clusters/{cluster}/tokens/{token}"): {"description": "x"},
    ("patch", "/clusters/{cluster}/tokens/{token}"): {"description": "x"},
    ("post", "/clusters/{cluster}/registry/retry"): None,
    ("put", "/registry-quota"): {"hard_bytes": 1000},
    ("patch", "/registry-quota"): {"hard_tags": 10},
    ("put", "/clusters/{cluster}/registry/quota"): {"hard_bytes": 1000},
    ("patch", "/clusters/{cluster}/registry/quota"): {"hard_tags": 10},
    ("put", "/registry-retention-policy"): {"keep_newest": 5},
    ("put", "/clusters/{cluster}/registry/retention-policy"): {"keep_newest": 5},
    ("post", "/clusters/{cluster}/registry/retention-policy/dry-run"): None,
    ("post", "/clusters/{cluster}/registry/cleanup"): None,
}


def path_of(route: str) -> str:
    """``v2/organizations/<str:org_slug>/clusters/<str:cluster_id>`` -> ``/clusters/{cluster}``
    (a parameter not in PARAMETERS keeps its own name, and fails test_every_parameter_is_filled)."""
    relative = route.removeprefix(ORGANIZATION)
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + PARAMETERS.get(m[1], m[1]) + "}", relative)


def handlers(view_class: type) -> list[str]:
    """The methods a view has a handler for, but HEAD and OPTIONS (see test_head_and_options)."""
    return [
        method
        for method in view_class.http_method_names
        if method not in ("head", "options") and callable(getattr(view_class, method, None))
    ]


def endpoints() -> list[Endpoint]:
    found = []
    for route, view in organization_routes():
        view_class = view.view_class
        path = path_of(route)
        for method in handlers(view_class):
            scope = "read_scope" if method.upper() in READ_METHODS else "write_scope"
            found.append(
                Endpoint(method, path, getattr(view_class, scope, None), BODIES.get((method, path)))
            )
    return found


ENDPOINTS = endpoints()


def test_no_endpoint_is_lost() -> None:
    """Every endpoint once listed by hand is generated, with the same scope and body."""
    assert len(LISTED) == 23
    assert [str(e) for e in LISTED if e not in ENDPOINTS] == []
    assert len(ENDPOINTS) >= len(LISTED)


def test_every_write_has_a_body_entry() -> None:
    writes = [(e.method, e.path) for e in ENDPOINTS if e.method in ("post", "put", "patch")]
    assert [write for write in writes if write not in BODIES] == []


def test_every_parameter_is_filled() -> None:
    fills = {"{" + name + "}" for name in PARAMETERS.values()}
    unknown = [
        (str(e), parameter)
        for e in ENDPOINTS
        for parameter in re.findall(r"{\w+}", e.path)
        if parameter not in fills
    ]
    assert unknown == []


@pytest.fixture
def acme(api) -> dict[str, str]:
    """Organization acme's cluster, with a hosted queue, an agent token and a failed registry
    holding a tagged repository: every endpoint above would succeed on them with the right
    token (but deleting a tag, which needs a ready registry: test_with_the_right_token...)."""
    cluster = services.cluster_create(organization=api.organization, name="Open Source")
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    token, _ = services.agent_token_create(cluster=cluster, description="agents")
    registry = Registry.objects.get(cluster=cluster)
    inventory_push(registry, f"{registry.namespace}/team/app", "v1", "sha256:m1", {})
    Registry.objects.filter(cluster=cluster).update(state=State.FAILED)
    event = AuditEvent.objects.get(type="CLUSTER_CREATED", subject_uuid=cluster.pk)
    return {
        "cluster": str(cluster.pk),
        "queue": str(queue.pk),
        "token": str(token.pk),
        "repository": "team/app",
        "tag": "v1",
        "event": str(event.pk),
    }


def snapshot() -> tuple[list[Any], ...]:
    """Everything of organization acme that an endpoint could change."""
    in_acme = {"organization__slug": "acme"}
    in_acme_cluster = {"cluster__organization__slug": "acme"}
    return (
        list(Tag.objects.values_list("pk", "digest")),
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
        list(Registry.objects.values_list("pk", "cluster_id", "state", "attempts", "push_refused")),
        list(
            RegistryQuota.objects.filter(**in_acme).values_list(
                "pk", "cluster_id", "hard_bytes", "soft_bytes", "hard_tags"
            )
        ),
        list(
            RetentionPolicy.objects.filter(**in_acme).values_list("pk", "cluster_id", "keep_newest")
        ),
        list(RetentionRun.objects.values_list("pk", "state")),
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
    elif "{event}" in endpoint.path:
        assert own.status_code == 404
        assert own.json() == {"message": "No audit event found"}
    else:  # its own cluster list, a cluster created or its own quota written
        assert own.status_code in (200, 201, 204)
        assert "Open Source" not in own.content.decode()
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_with_the_right_token_every_endpoint_succeeds(api, acme, endpoint: Endpoint) -> None:
    """The other side of the matrix: the fixture is one every endpoint works on."""
    if endpoint.path.endswith("/resume_dispatch"):
        services.queue_pause_dispatch(queue=Queue.objects.get(pk=acme["queue"]))
    response = api.request(endpoint.method, endpoint.path.format(**acme), endpoint.body)
    if endpoint.path.endswith(("/tags/{tag}", "/cleanup")):  # found, but the registry must be
        # ready: the deletions themselves, against a real registry, are
        # tests/registries/test_tag_deletion.py and test_retention_registry.py.
        assert response.status_code == 409, response.content
        return
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


HEAD_AND_OPTIONS = [
    pytest.param(
        method, path_of(route), view.view_class.read_scope, id=f"{method} {path_of(route)}"
    )
    for route, view in organization_routes()
    for method in ("HEAD", "OPTIONS")
    if method in answered_methods(view.view_class)
]


@pytest.mark.parametrize(("method", "path", "scope"), HEAD_AND_OPTIONS)
def test_head_and_options_pass_the_same_checks(
    client, api, make_api, other_api, acme, method: str, path: str, scope: str
) -> None:
    """HEAD and OPTIONS (every view answers OPTIONS) need the read scope and find nothing of
    another organization; they are apart from the matrix above because a HEAD answer has no
    body, and OPTIONS describes the view without looking anything up."""
    lacking = make_api(scopes=[s for s in ApiScope.values if s != scope])
    private = services.cluster_create(organization=api.organization, name="Private")
    before = snapshot()

    def send(sender: Any, org_slug: str = "acme", **ids: Any) -> Any:
        url = f"/v2/organizations/{org_slug}" + path.format(**{**acme, **ids})
        if sender is None:
            return client.generic(method, url)
        return sender.client.generic(method, url, HTTP_AUTHORIZATION=f"Bearer {sender.secret}")

    assert send(None).status_code == 401
    assert send(lacking).status_code == 403
    assert send(other_api).status_code == 404
    own = send(other_api, "other")
    if method == "HEAD":
        assert own.status_code == (404 if "{cluster}" in path or "{event}" in path else 200)
        if "{queue}" in path or "{token}" in path:
            assert send(api, cluster=private.pk).status_code == 404
    else:
        assert own.status_code == 200
        assert "Open Source" not in own.content.decode()
    assert send(api).status_code == 200
    assert snapshot() == before
