"""Test data for the registries app. Factories write rows directly: use services to test
behaviour (``registry_create_for_cluster`` creates a registry as the application does)."""

from __future__ import annotations

from datetime import datetime, timedelta

import factory
from django.db import transaction
from django.utils import timezone

from registries import services
from registries.inventory import UsageDay
from registries.models import DEFAULT_BACKEND, Registry, RegistryBackend, State
from registries.services.backends import backend_create
from tests.clusters.factories import ClusterFactory

#: States in which the database demands that deprovisioning was requested (or no cluster).
_DEPROVISIONED = (State.DEPROVISIONING, State.DELETED)


class RegistryFactory(factory.django.DjangoModelFactory):
    """A registry of a new cluster of organization ``acme``, in ``pending`` unless ``state=...``.

    Its namespace is the one the service gives (``<organization>/<first 12 hex digits of the
    cluster id>``), on the default backend unless pending; what the table's constraints demand
    follows ``state``: a ``ready`` registry has a URL on ``127.0.0.1:5000``, a
    ``deprovisioning`` or ``deleted`` one a time at which deprovisioning was requested.
    """

    class Meta:
        model = Registry

    cluster = factory.SubFactory(ClusterFactory, organization__slug="acme")
    #: Placed on the default backend (the settings' registry) unless it is ``pending``.
    backend = factory.LazyAttribute(
        lambda o: (
            None
            if o.state == State.PENDING
            else RegistryBackend.objects.get_or_create(name=DEFAULT_BACKEND)[0]
        )
    )
    namespace = factory.LazyAttribute(
        lambda o: f"{o.cluster.organization.slug}/{o.cluster.pk.hex[:12]}"
    )
    driver = "distribution"
    state = State.PENDING
    url = factory.LazyAttribute(
        lambda o: f"127.0.0.1:5000/{o.namespace}" if o.state == State.READY else ""
    )
    deprovision_requested_at = factory.LazyAttribute(
        lambda o: timezone.now() if o.state in _DEPROVISIONED else None
    )


def add_backend(name: str, **fields: object) -> RegistryBackend:
    """A registry backend ``name`` made by the service, on hosts of its name unless ``fields``
    say otherwise."""
    values: dict[str, object] = {
        "api_url": f"http://{name}.internal:5000",
        "public_host": f"{name}.registry.example",
        "token_service": f"registry-{name}",
    }
    values.update(fields)
    return backend_create(name=name, **values)  # type: ignore[arg-type]


def inventory_push(
    registry: Registry,
    repository: str,
    tag: str,
    digest: str,
    blobs: dict[str, int],
    *,
    at: datetime | None = None,
    size: int = 100,
) -> Registry:
    """Record a push of ``repository:tag`` (full name) -> manifest ``digest`` of ``size`` bytes
    referencing ``blobs``, through the inventory writers as the event path does; returns the
    registry with its new totals."""
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        assert locked is not None
        services.manifest_put(
            locked,
            digest=digest,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=size,
            blobs=blobs,
        )
        services.tag_put(
            locked, repository=repository, tag=tag, digest=digest, at=at or timezone.now()
        )
        return services.usage_refresh(locked)


def registry_with_usage(count: int = 12) -> Registry:
    """A ready registry whose repository ``r<i>`` holds ``(i + 1) * 1000`` bytes of layer (and a
    100-byte manifest), three pushes of the last one today, and storage figured today and three
    days ago (10.2 GB)."""
    registry = RegistryFactory(state=State.READY)
    for index in range(count):
        inventory_push(
            registry, f"{registry.namespace}/r{index:02}", "latest", f"sha256:m{index}",
            {f"sha256:l{index}": (index + 1) * 1000},
        )  # fmt: skip
    today = timezone.now().date()
    last = f"{registry.namespace}/r{count - 1:02}"
    services.usage_count(registry, repository=last, day=today, pushes=3)
    UsageDay.objects.create(
        registry=registry, repository="", day=today - timedelta(days=3), bytes=10_200_000_000
    )
    registry.refresh_from_db()
    return registry
