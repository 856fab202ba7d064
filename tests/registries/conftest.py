from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings

from clusters import services
from clusters.models import Cluster, ClusterAgentToken, Organization
from registries.models import Registry, State
from registries.reconciler import registries_reconcile
from registries.services import registry_provision
from tests.support.containers import Buildah, Skopeo


@dataclass
class ClusterAccess:
    """A cluster with a hosted queue ``linux``, an agent token, and a ready registry."""

    cluster: Cluster
    token: ClusterAgentToken
    secret: str
    registry: Registry

    @property
    def url(self) -> str:
        """``BUILDKITE_HOSTED_REGISTRY_URL``."""
        return self.registry.url

    @property
    def namespace(self) -> str:
        return self.registry.namespace


@pytest.fixture
def ready_cluster(registry_settings, broker_queue) -> Callable[[str], ClusterAccess]:
    """Makes clusters of organization ``acme`` whose registries were provisioned in-process
    against the session's registry. The provisioning messages are drained by ``broker_queue``."""

    def make(name: str) -> ClusterAccess:
        organization = Organization.objects.filter(slug="acme").first()
        if organization is None:
            organization = services.organization_create(slug="acme", name="Acme")
        cluster = services.cluster_create(organization=organization, name=name)
        token, secret = services.agent_token_create(cluster=cluster, description="agents")
        services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
        registry = Registry.objects.get(cluster=cluster)
        result = registry_provision(registry_id=registry.pk)
        registry.refresh_from_db()
        assert result.state == State.READY, registry.last_error
        return ClusterAccess(cluster, token, secret, registry)

    return make


@pytest.fixture
def reconcile(django_capture_on_commit_callbacks, broker_queue):
    """``reconcile(**kwargs)`` runs one reconcile pass, as the Celery beat task would, sending
    what it enqueues; returns its report."""

    def run(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return registries_reconcile(**kwargs)

    return run


@pytest.fixture
def skopeo(workdir: Path, container_tools) -> Skopeo:
    return Skopeo(workdir)


@pytest.fixture
def buildah(workdir: Path, container_tools) -> Buildah:
    return Buildah(workdir / "job")


@pytest.fixture
def request_token(live_server) -> Callable[..., dict[str, str]]:
    """``request_token(secret, scope, **params)``: GET the token endpoint over HTTP with HTTP
    Basic credentials, as docker and skopeo do; returns the 200 answer's JSON."""

    def request(secret: str, scope: str, **params: str) -> dict[str, str]:
        response = requests.get(
            f"{live_server.url}/registry/token",
            params={"service": settings.REGISTRY_TOKEN_SERVICE, "scope": scope, **params},
            auth=("buildkite-agent", secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()

    return request


@pytest.fixture
def job_environment(live_server) -> Callable[[str, str], dict[str, str]]:
    """``job_environment(secret, queue)``: the environment a job receives, over HTTP, as the
    agent hook fetches it."""

    def fetch(secret: str, queue: str) -> dict[str, str]:
        response = requests.get(
            f"{live_server.url}/v3/agent/environment",
            params={"queue": queue},
            headers={"Authorization": f"Token {secret}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["env"]

    return fetch
