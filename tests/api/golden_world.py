"""A REST API fixture with every case a response distinguishes, with fixed ids and times (the
golden test's, ``test_golden_responses.py``, and the read serializers' own test): clusters with
and without a default queue, blank and filled text, a creator or none; hosted Linux and macOS
queues and self-hosted ones, paused or not, with and without a note or an agent image; agent
tokens with and without an expiry and an allow-list, and a revoked one; registries ready (with
a canary and events), failed, and absent."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from clusters import services
from clusters.audit import AuditEvent
from clusters.models import (
    OPERATOR_SCOPES,
    ApiScope,
    ApiToken,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
)
from registries import conditions
from registries.models import Registry, RegistryEvent, State

#: A tenant's scopes, as the golden responses were recorded with (not the operators' ones).
TENANT_SCOPES = [scope for scope in ApiScope.values if scope not in OPERATOR_SCOPES]

T0 = dt.datetime(2024, 2, 29, 23, 59, 58, 987_654, tzinfo=dt.UTC)
ORG = "acme-corp"


def fixed_id(n: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012d}")


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _user(pk: int, username: str, email: str, first: str = "", last: str = "") -> User:
    return User.objects.create_user(
        username, email, id=pk, first_name=first, last_name=last, date_joined=_at(-86400 - pk)
    )


def _queue(cluster: Cluster, n: int, key: str, **kwargs: Any) -> Queue:
    queue = services.queue_create(cluster=cluster, key=key, queue_id=fixed_id(n), **kwargs)
    Queue.objects.filter(pk=queue.pk).update(created_at=_at(n))
    return queue


def _registry(cluster: Cluster, n: int, state: str, **fields: Any) -> Registry:
    Registry.objects.filter(cluster=cluster).delete()  # the one the first hosted queue made
    registry = Registry(
        id=fixed_id(n), cluster=cluster, namespace=f"{ORG}/{n:012x}", driver="distribution",
        state=state, created_at=_at(n), state_changed_at=_at(n + 1), **fields,
    )  # fmt: skip
    conditions.ready_from_state(registry, now=registry.state_changed_at)
    registry.save(force_insert=True)
    return registry


def build_world() -> Client:
    """The fixture above; a client with an API token of every scope."""
    sam = _user(7001, "sam", "Sam@Example.com ", "Sam", "Kim")
    bot = _user(7002, "api-bot", "")
    lee = _user(7003, "lee", "lee@example.org", "Lee")
    made = services.organization_create(slug=ORG, name="Acme Corp")
    Organization.objects.filter(pk=made.pk).update(id=9001, uuid=fixed_id(1), created_at=_at(1))
    AuditEvent.objects.filter(organization_id=made.pk).update(organization_id=9001)  # its creation
    organization = Organization.objects.get(pk=9001)
    token, secret = services.api_token_create(
        user=sam, organization=organization, description="golden", scopes=TENANT_SCOPES
    )
    ApiToken.objects.filter(pk=token.pk).update(id=fixed_id(2), created_at=_at(2))

    # A cluster with everything: text, flags, a default queue, every kind of queue, a registry.
    full = services.cluster_create(
        organization=organization, name="Open Source", description="Our OSS", emoji=":penguin:",
        color="#FFE0F1", hosted_git_mirror_enabled=True, hosted_container_cache_enabled=True,
        created_by=sam, cluster_id=fixed_id(10),
    )  # fmt: skip
    small = _queue(full, 11, "linux-small", description="Small", instance_shape="LINUX_AMD64_2X4",
                   created_by=sam)  # fmt: skip
    services.queue_update(queue=small, agent_image_ref="ghcr.io/acme/agent:1.2")
    macos = _queue(full, 12, "macos", instance_shape="MACOS_ARM64_M4_6X28", created_by=bot)
    services.queue_pause_dispatch(queue=macos, user=lee, note="Xcode upgrade")
    paused = _queue(full, 13, "self-hosted", retry_agent_affinity="prefer-different")
    services.queue_pause_dispatch(queue=paused, user=None)
    _queue(full, 14, "arm", instance_shape="LINUX_ARM64_8X32", created_by=lee)
    Queue.objects.filter(pk__in=[macos.pk, paused.pk]).update(dispatch_paused_at=_at(20))
    services.cluster_update(cluster=full, default_queue=small)
    ready = _registry(
        full, 30, State.READY, url=f"registry.example.com/{ORG}/{30:012x}", attempts=1,
        ready_at=_at(32), canary_at=_at(40), canary_ok=True,
        canary_latency=dt.timedelta(milliseconds=12.345), canary_message="pushed, read, deleted",
    )  # fmt: skip
    states = ["", State.PENDING, State.PROVISIONING, State.READY]
    for seconds, (from_state, to_state) in enumerate(zip(states, states[1:], strict=False)):
        RegistryEvent.objects.create(
            registry=ready, from_state=from_state, to_state=to_state, attempt=min(seconds, 1),
            duration=dt.timedelta(seconds=seconds * 0.25), message=f"step {seconds}",
            created_at=_at(30 + seconds),
        )  # fmt: skip
    services.agent_environment_set(
        cluster=full, name="BUILDKITE_HOSTED_REGISTRY_URL", value=ready.url, source="registry"
    )
    for n, description, kwargs in [
        (50, "ci", {"expires_at": dt.datetime(2099, 1, 2, 3, 4, 5, 678_999, tzinfo=dt.UTC),
                    "allowed_ip_addresses": "10.0.0.0/8 202.144.0.0/24", "created_by": sam}),
        (51, "default", {}),
        (52, "revoked", {"created_by": bot}),
    ]:  # fmt: skip
        made, _ = services.agent_token_create(cluster=full, description=description, **kwargs)
        ClusterAgentToken.objects.filter(pk=made.pk).update(id=fixed_id(n), created_at=_at(n))
    services.agent_token_revoke(token=ClusterAgentToken.objects.get(pk=fixed_id(52)))

    # A cluster with nothing: blank text, no creator, no queue, no registry.
    bare = services.cluster_create(organization=organization, name="Bare", cluster_id=fixed_id(60))
    # A self-hosted queue only, and a registry that failed (as an operator left it).
    failed = services.cluster_create(
        organization=organization, name="Zeta", created_by=bot, cluster_id=fixed_id(70)
    )
    _queue(failed, 71, "default", description="")
    services.cluster_update(cluster=failed, default_queue=Queue.objects.get(pk=fixed_id(71)))
    _registry(failed, 72, State.FAILED, attempts=5, last_error="The registry did not answer")
    for n, cluster in [(10, full), (60, bare), (70, failed)]:
        Cluster.objects.filter(pk=cluster.pk).update(created_at=_at(n))
    return Client(headers={"Authorization": f"Bearer {secret}"})
