"""Two registry backends, each a real Distribution process with its own token service (rendered
by ``registry_config``'s ``service``), the token endpoint in the live server: registries placed
on both by provisioning, a skopeo push and pull on each with tokens naming that backend's
service, and a token for the other backend's service refused by the registry; each registry's
canary and each backend's canary pass against their own registry process; once b drains, new
registries all land on a. Nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests

from clusters import services
from clusters.models import Organization
from registries.backends import backends_forget
from registries.demo_image import write_oci_layout
from registries.management.commands.registry_config import render_registry_config
from registries.models import Registry, RegistryBackend, State
from registries.services import backend_canary, registry_canary, registry_provision
from registries.services.backends import backend_create, backend_drain
from registries.tokens import Principal, Scope, token_issue
from tests.support.containers import layout_digest, ok
from tests.support.processes import RegistryProcess, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]


def _registry(workdir: Path, service: str) -> RegistryProcess:
    port = free_port()
    config = render_registry_config(
        addr=f"127.0.0.1:{port}",
        storage_dir=str(workdir / f"{service}-data"),
        log_level="warn",
        service=service,
    )
    return RegistryProcess(workdir, port=port, config=config)


@pytest.fixture(scope="module")
def two_registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RegistryProcess]]:
    workdir = tmp_path_factory.mktemp("backends")
    started = [_registry(workdir, "registry-a").start(), _registry(workdir, "registry-b").start()]
    yield started
    for registry in started:
        registry.stop()


@pytest.fixture
def backends(two_registries: list[RegistryProcess]) -> list[RegistryBackend]:
    """Backends ``a`` and ``b`` on the two registries, equally weighted; the default drained."""
    made = [
        backend_create(
            name=name,
            api_url=registry.url,
            public_host=registry.host,
            token_service=f"registry-{name}",
        )
        for name, registry in zip("ab", two_registries, strict=True)
    ]
    # A transactional test before this one may have flushed the default backend's row.
    default, _ = RegistryBackend.objects.get_or_create(name="default")
    backend_drain(backend=default)
    backends_forget()
    return made


def _registry_on(backend: RegistryBackend, organization: Organization) -> tuple[Registry, str]:
    """Provision clusters until one lands on ``backend`` (placement hashes the cluster id)."""
    for attempt in range(40):
        cluster = services.cluster_create(
            organization=organization, name=f"{backend.name}{attempt}"
        )
        _, secret = services.agent_token_create(cluster=cluster, description="agents")
        services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
        registry = Registry.objects.get(cluster=cluster)
        assert registry_provision(registry_id=registry.pk).state == State.READY
        registry.refresh_from_db()
        if registry.backend_id == backend.pk:
            return registry, secret
    raise AssertionError(f"40 clusters and none placed on {backend.name}")


def test_registries_on_two_backends_push_and_pull_with_their_own_service(
    backends, skopeo, workdir: Path, broker_queue
) -> None:
    organization = services.organization_create(slug="acme", name="Acme")
    layout = workdir / "image"
    digest = write_oci_layout(layout, "hello from a backend")

    for backend in backends:
        registry, secret = _registry_on(backend, organization)
        assert registry.url == f"{backend.public_host}/{registry.namespace}"
        reference = f"{registry.url}/app:latest"

        ok(skopeo.push(layout, reference, secret))
        ok(skopeo.pull(reference, secret, workdir / f"pulled-{backend.name}"))
        assert layout_digest(workdir / f"pulled-{backend.name}") == digest

        # A token for the other backend's service: the endpoint grants it nothing in this
        # namespace, and this registry refuses its audience anyway.
        other = "registry-b" if backend.name == "a" else "registry-a"
        scope = f"repository:{registry.namespace}/app:pull"
        realm = registry_token_url()
        for service, granted in ((backend.token_service, True), (other, False)):
            answer = requests.get(
                realm,
                params={"service": service, "scope": scope},
                auth=("agent", secret),
                timeout=5,
            ).json()
            claims = jwt.decode(answer["token"], options={"verify_signature": False})
            assert (claims["aud"], bool(claims["access"])) == (service, granted)
            read = requests.get(
                f"http://{backend.public_host}/v2/{registry.namespace}/app/manifests/latest",
                headers={
                    "Authorization": f"Bearer {answer['token']}",
                    "Accept": "application/vnd.oci.image.manifest.v1+json",
                },
                timeout=5,
            )
            assert read.status_code == (200 if granted else 401), (service, read.text)

        # The registry itself checks the audience: a token granting the repository, signed by
        # our key, but for the other backend's service, is refused.
        for service, status in ((backend.token_service, 200), (other, 401)):
            token = token_issue(
                Principal.control_plane(registry.namespace),
                [Scope("repository", f"{registry.namespace}/app", ("pull",))],
                service=service,
            ).token
            read = requests.get(
                f"http://{backend.public_host}/v2/{registry.namespace}/app/tags/list",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            assert read.status_code == status, (service, read.text)

        # Its canary goes to its backend; each backend's own canary passes too.
        canary = registry_canary(registry_id=registry.pk)
        assert canary is not None
        assert canary.ok, canary.seen
        assert backend_canary(backend=backend.name).result.ok

    # Both backends hold registries; with b draining, new ones all go to a.
    assert set(Registry.objects.values_list("backend__name", flat=True)) == {"a", "b"}
    backend_drain(backend=backends[1])
    for attempt in range(6):
        cluster = services.cluster_create(organization=organization, name=f"after-{attempt}")
        services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
        registry = Registry.objects.get(cluster=cluster)
        assert registry_provision(registry_id=registry.pk).state == State.READY
        registry.refresh_from_db()
        assert registry.backend_id == backends[0].pk


def registry_token_url() -> str:
    from django.conf import settings

    return settings.REGISTRY_TOKEN_REALM
