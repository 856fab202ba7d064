"""schemathesis against the generated OpenAPI schema, authenticated: for every operation,
generated requests never get a 5xx, and every response matches what the schema says (status
code, content type, headers, body).

Path parameters name real objects of the token's organization (recreated when an example has
deleted them), so generated bodies reach the views and services rather than stopping at a 404.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clusters import services
from clusters.audit import AuditEvent
from clusters.models import ApiScope, Cluster, ClusterAgentToken, Organization
from registries.inventory import Tag
from registries.maintenance import GarbageCollection
from registries.models import DEFAULT_BACKEND, Registry, RegistryBackend
from tests.registries.factories import inventory_push

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# Loaded at collection: the schema view needs no database. (schemathesis's lazy fixture loader
# does not work with pytest 9.)
schema = schemathesis.openapi.from_wsgi("/v2/schema/", get_wsgi_application())


@pytest.fixture
def secret(db) -> str:
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = services.api_token_create(
        # No email, as create_api_token makes them; staff, for the operators' endpoints too.
        user=User.objects.create_user("sam", is_staff=True),
        organization=organization,
        description="schemathesis",
        scopes=list(ApiScope.values),
    )
    return secret


def existing_objects() -> dict[str, str]:
    """acme's cluster with a hosted queue, an agent token and a tagged repository in its
    registry, made again if a DELETE took them."""
    organization = Organization.objects.get(slug="acme")
    cluster = Cluster.objects.filter(organization=organization, name="Fuzzed").first()
    if cluster is None:
        cluster = services.cluster_create(organization=organization, name="Fuzzed")
    queue = cluster.queues.filter(key="linux").first() or services.queue_create(
        cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4"
    )
    token = ClusterAgentToken.objects.active().filter(cluster=cluster).first()
    if token is None:
        token, _ = services.agent_token_create(cluster=cluster, description="agents")
    registry = Registry.objects.get(cluster=cluster)  # pending: a deletion is refused (409)
    if not Tag.objects.filter(repository__registry=registry).exists():
        inventory_push(registry, f"{registry.namespace}/team/app", "v1", "sha256:m1", {})
    return {
        "org_slug": "acme",
        "cluster_id": str(cluster.pk),
        "queue_id": str(queue.pk),
        "token_id": str(token.pk),
        "name": "default",  # the registry backend
        "collection_id": str(_collection().pk),
        "repository": "team/app",
        "tag": "v1",
        "event_uuid": str(
            AuditEvent.objects.filter(organization=organization).latest("occurred_at").pk
        ),
    }


def _collection() -> GarbageCollection:
    """A garbage collection of the default backend (a POST may have queued another)."""
    backend = RegistryBackend.objects.get_or_create(name=DEFAULT_BACKEND)[0]
    return backend.collections.first() or GarbageCollection.objects.create(
        backend=backend, trigger="operator", state="succeeded"
    )


@schema.parametrize()
@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_every_response_matches_the_schema(case, secret: str) -> None:
    if case.path_parameters:
        objects = existing_objects()
        case.path_parameters = {name: objects[name] for name in case.path_parameters}
    response = case.call(headers={"Authorization": f"Bearer {secret}"})
    case.validate_response(response, checks=CHECKS)
