"""The audit log (``clusters.audit``, docs/audit.md): every service write records exactly one row,
with its type, subject, organization and actor, in its own transaction (a write rolled back
leaves none); each entry point names its actor; rows are never updated; retention prunes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from clusters import services, webhooks
from clusters.audit import Actor, ActorType, AuditEvent, acting_as, current_actor
from clusters.models import (
    ApiToken,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
    WebhookSecret,
)
from clusters.tasks import audit_prune as audit_prune_task
from registries.key_files import KeyFolder
from registries.models import Registry, RegistryBackend, State
from registries.services import registry_deprovision_start, registry_retry, registry_verify
from registries.services.backends import backend_update
from registries.services.signing_keys import reencrypt_keys, rotate_keys
from tests.clusters.webhooks.helpers import deliver, payload
from tests.registries.factories import RegistryFactory, add_backend

pytestmark = pytest.mark.django_db

#: Who the service writes below are made by (any actor: the entry points' own are tested apart).
OPERATOR = Actor(ActorType.USER, "42", "operator")


@dataclass
class World:
    """Organization ``acme`` with a cluster, a queue, an agent token, an API token and a webhook
    secret, all made through the services."""

    organization: Organization
    cluster: Cluster
    queue: Queue
    agent_token: ClusterAgentToken
    api_token: ApiToken
    secret: WebhookSecret
    user: User

    def registry(self, state: str) -> Registry:
        """A registry in ``state`` of a new cluster of acme."""
        cluster = services.cluster_create(organization=self.organization, name=f"With {state}")
        return RegistryFactory(cluster=cluster, state=state)  # type: ignore[no-any-return]


@pytest.fixture
def world(default_backend: RegistryBackend) -> World:
    organization = services.organization_create(slug="acme", name="Acme")
    cluster = services.cluster_create(organization=organization, name="Open Source")
    user = User.objects.create_user("sam")
    secret, _ = webhooks.webhook_secret_create(organization=organization, description="platform")
    return World(
        organization=organization,
        cluster=cluster,
        queue=services.queue_create(cluster=cluster, key="linux"),
        agent_token=services.agent_token_create(cluster=cluster, description="agents")[0],
        api_token=services.api_token_create(
            user=user, organization=organization, description="ci", scopes=["read_clusters"]
        )[0],
        secret=secret,
        user=user,
    )


@dataclass(frozen=True)
class Write:
    """A service write, the row it records (type, subject type) and how to tell its subject
    (from the world and what the write returned) and its organization (None: the platform's)."""

    name: str
    do: Callable[[World], Any]
    type: str
    subject_type: str
    subject: Callable[[World, Any], object]
    platform: bool = False

    def __str__(self) -> str:
        return self.name


def _registry_write(state: str, write: Callable[[Registry], Any]) -> Callable[[World], Any]:
    def do(world: World) -> Registry:
        registry = world.registry(state)
        write(registry)
        return registry

    return do


def _deleted_cluster(world: World) -> Cluster:
    """A cluster with a ready registry, deleted: its registry's deprovisioning is part of it."""
    registry = world.registry(State.READY)
    cluster = Cluster.objects.get(pk=registry.cluster_id)
    services.cluster_delete(cluster=cluster)
    assert Registry.objects.get(pk=registry.pk).state == State.DEPROVISIONING
    return cluster


def _paused(world: World) -> Queue:
    queue = services.queue_create(cluster=world.cluster, key="paused")
    services.queue_pause_dispatch(queue=queue)
    AuditEvent.objects.filter(subject_uuid=queue.pk).delete()  # the setup's rows
    return services.queue_resume_dispatch(queue=queue)


def _keys() -> KeyFolder:
    return KeyFolder(settings.REGISTRY_KEYS_DIR)


SUBJECT = lambda world, result: result.pk  # noqa: E731 - the usual subject: what was written

WRITES = [
    Write(
        "organization_create",
        lambda w: services.organization_create(slug="other", name="Other"),
        "ORGANIZATION_CREATED",
        "ORGANIZATION",
        lambda w, result: result.uuid,
    ),
    Write(
        "cluster_create",
        lambda w: services.cluster_create(organization=w.organization, name="New"),
        "CLUSTER_CREATED",
        "CLUSTER",
        SUBJECT,
    ),
    Write(
        "cluster_update",
        lambda w: services.cluster_update(cluster=w.cluster, name="Renamed"),
        "CLUSTER_UPDATED",
        "CLUSTER",
        SUBJECT,
    ),
    Write(
        "cluster_delete (its registry's deprovisioning included)",
        _deleted_cluster,
        "CLUSTER_DELETED",
        "CLUSTER",
        SUBJECT,
    ),
    Write(
        "queue_create",
        lambda w: services.queue_create(cluster=w.cluster, key="new"),
        "CLUSTER_QUEUE_CREATED",
        "CLUSTER_QUEUE",
        SUBJECT,
    ),
    Write(
        "queue_update",
        lambda w: services.queue_update(queue=w.queue, description="x"),
        "CLUSTER_QUEUE_UPDATED",
        "CLUSTER_QUEUE",
        SUBJECT,
    ),
    Write(
        "queue_delete",
        lambda w: (w.queue.pk, services.queue_delete(queue=w.queue))[0],
        "CLUSTER_QUEUE_DELETED",
        "CLUSTER_QUEUE",
        lambda w, result: result,
    ),
    Write(
        "queue_pause_dispatch",
        lambda w: services.queue_pause_dispatch(queue=w.queue, note="maintenance"),
        "CLUSTER_QUEUE_UPDATED",
        "CLUSTER_QUEUE",
        SUBJECT,
    ),
    Write("queue_resume_dispatch", _paused, "CLUSTER_QUEUE_UPDATED", "CLUSTER_QUEUE", SUBJECT),
    Write(
        "agent_token_create",
        lambda w: services.agent_token_create(cluster=w.cluster, description="new")[0],
        "CLUSTER_TOKEN_CREATED",
        "CLUSTER_TOKEN",
        SUBJECT,
    ),
    Write(
        "agent_token_update",
        lambda w: services.agent_token_update(token=w.agent_token, description="renamed"),
        "CLUSTER_TOKEN_UPDATED",
        "CLUSTER_TOKEN",
        SUBJECT,
    ),
    Write(
        "agent_token_revoke",
        lambda w: services.agent_token_revoke(token=w.agent_token),
        "CLUSTER_TOKEN_DELETED",
        "CLUSTER_TOKEN",
        SUBJECT,
    ),
    Write(
        "api_token_create",
        lambda w: services.api_token_create(
            user=w.user, organization=w.organization, description="new", scopes=["read_clusters"]
        )[0],
        "API_ACCESS_TOKEN_CREATED",
        "API_ACCESS_TOKEN",
        SUBJECT,
    ),
    Write(
        "api_token_revoke",
        lambda w: services.api_token_revoke(token=w.api_token),
        "API_ACCESS_TOKEN_DELETED",
        "API_ACCESS_TOKEN",
        SUBJECT,
    ),
    Write(
        "webhook_secret_create",
        lambda w: webhooks.webhook_secret_create(organization=w.organization, description="n")[0],
        "WEBHOOK_SECRET_CREATED",
        "WEBHOOK_SECRET",
        SUBJECT,
    ),
    Write(
        "webhook_secret_revoke",
        lambda w: webhooks.webhook_secret_revoke(secret=w.secret),
        "WEBHOOK_SECRET_DELETED",
        "WEBHOOK_SECRET",
        SUBJECT,
    ),
    Write(
        "registry_retry",
        _registry_write(State.FAILED, lambda r: registry_retry(registry=r)),
        "REGISTRY_RETRIED",
        "REGISTRY",
        SUBJECT,
    ),
    Write(
        "registry_deprovision_start (an operator's)",
        _registry_write(
            State.READY, lambda r: registry_deprovision_start(registry=r, reason="asked")
        ),
        "REGISTRY_DEPROVISIONED",
        "REGISTRY",
        SUBJECT,
    ),
    Write(
        "registry_verify",
        _registry_write(State.READY, lambda r: registry_verify(registry=r)),
        "REGISTRY_VERIFIED",
        "REGISTRY",
        SUBJECT,
    ),
    Write(
        "rotate_keys",
        lambda w: rotate_keys(_keys()).current,
        "REGISTRY_SIGNING_KEY_ROTATED",
        "REGISTRY_SIGNING_KEY",
        lambda w, result: result.kid,
        platform=True,
    ),
    Write(
        "reencrypt_keys",
        lambda w: reencrypt_keys(),
        "REGISTRY_SIGNING_KEYS_REENCRYPTED",
        "REGISTRY_SIGNING_KEY",
        lambda w, result: "",
        platform=True,
    ),
    Write(
        "backend_create",
        lambda w: add_backend("second"),
        "REGISTRY_BACKEND_CREATED",
        "REGISTRY_BACKEND",
        lambda w, result: result.name,
        platform=True,
    ),
    Write(
        "backend_update",
        lambda w: backend_update(backend=add_backend("second"), weight=5),
        "REGISTRY_BACKEND_UPDATED",
        "REGISTRY_BACKEND",
        lambda w, result: result.name,
        platform=True,
    ),
]


class RolledBack(Exception):
    pass


def _write_then_fail(write: Write, world: World) -> None:
    """``write`` in a transaction that fails after it (and so rolls it back)."""
    with transaction.atomic():
        write.do(world)
        raise RolledBack


def _new_rows(before: set[Any]) -> list[AuditEvent]:
    return list(AuditEvent.objects.exclude(pk__in=before).order_by("occurred_at"))


@pytest.mark.parametrize("write", WRITES, ids=str)
def test_every_service_write_records_exactly_one_row(world: World, write: Write) -> None:
    before = set(AuditEvent.objects.values_list("pk", flat=True))

    with acting_as(OPERATOR):
        result = write.do(world)

    rows = [row for row in _new_rows(before) if row.actor_uuid == OPERATOR.uuid]
    # Setup a write makes for itself (a registry's cluster) is attributed to the operator too:
    # the row under test is the last one, of its type.
    assert [row.type for row in rows][-1] == write.type
    mine = [row for row in rows if row.type == write.type]
    assert len(mine) == 1
    [row] = mine
    assert row.subject_type == write.subject_type
    assert row.subject_uuid == str(write.subject(world, result))
    organization_id = None if write.platform else world.organization.pk
    if write.name == "organization_create":
        organization_id = Organization.objects.get(slug="other").pk
    assert row.organization_id == organization_id
    assert (row.actor_type, row.actor_uuid, row.actor_name) == ("USER", "42", "operator")


@pytest.mark.parametrize("write", WRITES, ids=str)
def test_a_rolled_back_write_records_nothing(world: World, write: Write) -> None:
    before = AuditEvent.objects.count()

    with pytest.raises(RolledBack):
        _write_then_fail(write, world)

    assert AuditEvent.objects.count() == before


def test_no_row_holds_a_secret(world: World) -> None:
    token, secret = services.agent_token_create(cluster=world.cluster, description="t")
    api_token, api_secret = services.api_token_create(
        user=world.user, organization=world.organization, description="a", scopes=["read_clusters"]
    )
    hook, hook_secret = webhooks.webhook_secret_create(
        organization=world.organization, description="w"
    )
    stored = " ".join(
        f"{row.data} {row.context} {row.subject_name}" for row in AuditEvent.objects.all()
    )
    for value in (secret, token.token_hash, token.token_prefix, api_secret, api_token.token_hash):
        assert value not in stored
    assert hook_secret not in stored
    assert hook.salt not in stored


def test_an_update_records_what_changed_as_old_and_new(world: World) -> None:
    services.cluster_update(cluster=world.cluster, name="Renamed", description="d")

    row = AuditEvent.objects.get(type="CLUSTER_UPDATED")
    assert row.data == {"name": ["Open Source", "Renamed"], "description": ["", "d"]}
    assert row.subject_name == "Renamed"


def test_a_second_revocation_changes_nothing_and_records_nothing(world: World) -> None:
    services.agent_token_revoke(token=world.agent_token)
    services.agent_token_revoke(token=world.agent_token)

    assert AuditEvent.objects.filter(type="CLUSTER_TOKEN_DELETED").count() == 1


def test_writes_outside_any_entry_point_are_the_systems(world: World) -> None:
    row = AuditEvent.objects.get(type="CLUSTER_CREATED")

    assert (row.actor_type, row.actor_uuid, row.actor_name) == ("SYSTEM", "", "system")
    assert row.context == {"type": "SystemContext"}
    assert current_actor()[0].type == ActorType.SYSTEM


def test_the_reconcilers_retry_is_its_event_not_an_audit_row(world: World) -> None:
    registry = world.registry(State.FAILED)
    Registry.objects.filter(pk=registry.pk).update(failure_transient=True)

    registry_retry(registry=registry, why="registry answers again", only_transient=True)

    assert not AuditEvent.objects.filter(type="REGISTRY_RETRIED").exists()


def test_audit_rows_are_never_updated(world: World) -> None:
    row = AuditEvent.objects.first()
    assert row is not None
    row.type = "FORGED"

    with pytest.raises(ValueError, match="never updated"):
        row.save()


# --- actors of the entry points ----------------------------------------------------------------


def test_the_rest_api_records_the_token_its_user_and_the_request(client, world: World) -> None:
    token, secret = services.api_token_create(
        user=world.user,
        organization=world.organization,
        description="ci",
        scopes=["write_clusters"],
    )

    response = client.post(
        "/v2/organizations/acme/clusters",
        {"name": "From the API"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        HTTP_USER_AGENT="buildkite-cli/3",
    )

    assert response.status_code == 201
    row = AuditEvent.objects.get(type="CLUSTER_CREATED", subject_name="From the API")
    assert (row.actor_type, row.actor_uuid, row.actor_name) == (
        "API_TOKEN",
        str(token.pk),
        "ci (sam)",
    )
    assert row.context == {
        "type": "ApiContext",
        "request_ip": "127.0.0.1",
        "request_user_agent": "buildkite-cli/3",
    }
    assert current_actor()[0].type == ActorType.SYSTEM  # nothing outlives the request


def test_the_console_records_the_staff_user(operator, world: World) -> None:
    response = operator.post(
        "/admin/clusters/cluster/add/",
        {
            "organization": world.organization.pk,
            "name": "From the console",
            "color": "",
            "emoji": "",
        },
    )

    assert response.status_code == 302, response.content
    row = AuditEvent.objects.get(type="CLUSTER_CREATED", subject_name="From the console")
    user = User.objects.get(username="operator")
    assert (row.actor_type, row.actor_uuid, row.actor_name) == ("USER", str(user.pk), "operator")
    assert row.context["type"] == "WebContext"
    assert current_actor()[0].type == ActorType.SYSTEM


def test_the_webhook_records_the_delivery(client, world: World) -> None:
    _, secret = webhooks.webhook_secret_create(organization=world.organization, description="s")

    response = deliver(
        payload(cluster_name="Webhook"), secret=secret, delivery="delivery-77", client=client
    )

    assert response.status_code == 200, response.content
    rows = AuditEvent.objects.filter(actor_type="WEBHOOK").order_by("occurred_at")
    assert [(r.type, r.actor_uuid) for r in rows] == [
        ("CLUSTER_CREATED", "delivery-77"),
        ("CLUSTER_QUEUE_CREATED", "delivery-77"),
    ]
    assert rows[0].context["type"] == "WebhookContext"
    assert rows[0].context["event"] == "cluster_queue.created"


def test_a_replayed_delivery_is_the_deliverys_doing_from_the_command(client, world: World) -> None:
    _, secret = webhooks.webhook_secret_create(organization=world.organization, description="s")
    deliver(payload(cluster_name="Webhook"), secret=secret, delivery="delivery-9", client=client)
    services.queue_delete(queue=Queue.objects.get(key="linux-small"))

    call_command("webhook_replay", "delivery-9", stdout=StringIO())

    row = AuditEvent.objects.filter(type="CLUSTER_QUEUE_CREATED").latest("occurred_at")
    assert (row.actor_type, row.actor_uuid) == ("WEBHOOK", "delivery-9")
    assert (row.context["type"], row.context["command"]) == ("CommandContext", "webhook_replay")


def test_a_command_records_itself(world: World) -> None:
    call_command("create_webhook_secret", "acme", "--description", "rotated")

    row = AuditEvent.objects.get(type="WEBHOOK_SECRET_CREATED", subject_name="rotated")
    assert row.actor_type == "SYSTEM"
    assert row.actor_name.startswith("manage.py create_webhook_secret")
    assert row.context["type"] == "CommandContext"
    assert row.context["command"] == "create_webhook_secret"


# --- retention -----------------------------------------------------------------------------------


def test_retention_prunes_what_is_older_in_batches(world: World, settings) -> None:
    settings.AUDIT_RETENTION_DAYS, settings.AUDIT_PRUNE_BATCH = 30, 2
    now = timezone.now()
    kept = AuditEvent.objects.count()
    for days in (31, 40, 400, 365):
        AuditEvent.objects.filter(
            pk=services.audit_record(
                type="OLD", organization=world.organization, subject_type="X"
            ).pk
        ).update(occurred_at=now - dt.timedelta(days=days))
    recent = services.audit_record(type="NEW", organization=None, subject_type="X")
    AuditEvent.objects.filter(pk=recent.pk).update(occurred_at=now - dt.timedelta(days=29))

    assert services.audit_prune(now=now) == 4

    assert not AuditEvent.objects.filter(type="OLD").exists()
    assert AuditEvent.objects.count() == kept + 1


def test_retention_zero_keeps_everything(world: World, settings) -> None:
    settings.AUDIT_RETENTION_DAYS = 0
    AuditEvent.objects.update(occurred_at=timezone.now() - dt.timedelta(days=5000))

    assert services.audit_prune() == 0
    assert AuditEvent.objects.exists()


def test_the_prune_task_is_on_beats_schedule_and_prunes(world: World, settings) -> None:
    settings.AUDIT_RETENTION_DAYS = 1
    AuditEvent.objects.filter(type="CLUSTER_CREATED").update(
        occurred_at=timezone.now() - dt.timedelta(days=2)
    )

    assert audit_prune_task.apply().get() == 1

    entry = settings.CELERY_BEAT_SCHEDULE["clusters.audit_prune"]
    assert (entry["task"], entry["schedule"]) == ("clusters.audit_prune", 3600.0)
    assert not AuditEvent.objects.filter(type="CLUSTER_CREATED").exists()


# --- console -------------------------------------------------------------------------------------


def test_the_console_lists_audit_events_read_only(operator, world: World) -> None:
    row = AuditEvent.objects.get(type="CLUSTER_CREATED")

    listed = operator.get("/admin/clusters/auditevent/", {"q": "Open Source"})
    shown = operator.get(f"/admin/clusters/auditevent/{row.pk}/change/")
    added = operator.get("/admin/clusters/auditevent/add/")
    deleted = operator.post(f"/admin/clusters/auditevent/{row.pk}/delete/", {"post": "yes"})

    assert listed.status_code == 200
    assert "CLUSTER_CREATED" in listed.content.decode()
    assert shown.status_code == 200
    assert added.status_code == 403
    assert deleted.status_code == 403
    assert AuditEvent.objects.filter(pk=row.pk).exists()
