from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from clusters import services
from clusters.models import Cluster, ClusterAgentToken, Organization
from registries.models import Registry, State
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
def skopeo(workdir: Path, container_tools) -> Skopeo:
    return Skopeo(workdir)


@pytest.fixture
def buildah(workdir: Path, container_tools) -> Buildah:
    return Buildah(workdir / "job")
