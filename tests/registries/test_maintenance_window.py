"""The maintenance window's control side, without processes: the replicas' endpoint
(``GET /registry/maintenance``), the token endpoint's refusal during a window, asking for a
collection (one per backend, audited, enqueued on commit), the schedule and the end of stale
windows, a window that fails because no replica reports, and the operators' API and command."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from io import StringIO

import pytest
import redis
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from clusters import services as cluster_services
from clusters.audit import AuditEvent
from clusters.models import ApiScope
from controlplane import hotcache
from registries.backends import backends_forget
from registries.drivers.collector import CollectorError, garbage_collect
from registries.maintenance import (
    CollectionState,
    GarbageCollection,
    RegistryReplica,
)
from registries.models import DEFAULT_BACKEND, RegistryBackend, State
from registries.services import (
    CollectionActive,
    collection_request,
    collection_run,
    collections_end_stale,
    collections_repair,
    collections_schedule,
    maintenance,
    maintenance_schedule,
    refuse_pushes,
)
from registries.services.maintenance import NO_REPLICA, collector_timeout
from registries.services.maintenance_schedule import STALE_HEARTBEAT_SECONDS
from tests.api.conftest import Api, make_api, staff
from tests.registries.factories import RegistryFactory
from tests.support import broker

pytestmark = pytest.mark.django_db

TOKEN = "window-notifications-token"
SERVICE = "hosted-registry"
MAINTENANCE = (
    "Registry maintenance: garbage collection on this registry's backend; pushes are refused "
    "until it ends. Retry after {} seconds."
)
__all__ = ["make_api"]  # the operators' API client fixture


@pytest.fixture
def window_settings(settings):
    settings.REGISTRY_NOTIFICATIONS_TOKEN = TOKEN
    settings.REGISTRY_GC_CONFIG = "/nonexistent/registry.yml"
    settings.REGISTRY_GC_DRAIN_SECONDS = 0.0
    settings.HOT_CACHE_SECONDS = 0.0
    settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS = 1.0
    settings.REGISTRY_GC_REPLICA_POLL_SECONDS = 0.2
    return settings


@pytest.fixture
def backend(default_backend, window_settings) -> RegistryBackend:
    backends_forget()
    return default_backend


def report(client, replica: str = "r1", mode: str = "readwrite", **overrides: str):
    params = {"service": SERVICE, "replica": replica, "mode": mode, **overrides}
    return client.get("/registry/maintenance", params, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


# --- GET /registry/maintenance ----------------------------------------------------------------


def test_a_replica_reports_its_mode_and_is_told_the_one_the_window_wants(client, backend) -> None:
    first = report(client)

    assert first.status_code == 200
    assert first.json() == {"mode": "readwrite", "poll_seconds": 0.2, "retry_after": 0}
    replica = RegistryReplica.objects.get()
    assert (replica.backend_id, replica.name, replica.mode) == (backend.pk, "r1", "readwrite")

    GarbageCollection.objects.create(backend=backend, trigger="operator", state="read_only")
    refuse_pushes(backend.pk, 30)
    told = report(client).json()

    assert told["mode"] == "readonly"
    assert 29 <= told["retry_after"] <= 30
    assert report(client, mode="readonly").json()["mode"] == "readonly"
    replica.refresh_from_db()
    assert replica.mode == "readonly"
    changes = AuditEvent.objects.filter(type="REGISTRY_REPLICA_MODE_CHANGED")
    assert sorted((e.subject_name, e.data["mode"]) for e in changes) == [
        ("default", "readonly"),
        ("default", "readwrite"),
    ]


def test_a_heartbeat_in_the_same_mode_writes_nothing_until_seen_at_is_old(client, backend) -> None:
    report(client)
    seen = RegistryReplica.objects.get().seen_at

    report(client)
    assert RegistryReplica.objects.get().seen_at == seen

    old = seen - dt.timedelta(seconds=60)
    RegistryReplica.objects.update(seen_at=old)
    report(client)
    assert RegistryReplica.objects.get().seen_at > old
    assert AuditEvent.objects.filter(type="REGISTRY_REPLICA_MODE_CHANGED").count() == 1


@pytest.mark.parametrize(
    ("headers", "params", "status", "message"),
    [
        ({}, {}, 401, "Send the registry's notifications token: Authorization: Bearer <token>."),
        ({"HTTP_AUTHORIZATION": "Bearer wrong"}, {}, 401, None),
        (None, {"service": "nope"}, 404, "No registry backend has the token service 'nope'."),
        (None, {"replica": ""}, 400, None),
        (
            None,
            {"mode": "sideways"},
            400,
            "mode must be one of readwrite, readonly, starting, stopped, not 'sideways'.",
        ),
    ],
)
def test_refusals_are_json_and_record_nothing(
    client, backend, headers, params, status, message
) -> None:
    query = {"service": SERVICE, "replica": "r1", "mode": "readwrite", **params}
    sent = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"} if headers is None else headers
    response = client.get("/registry/maintenance", query, **sent)

    assert response.status_code == status
    assert set(response.json()) == {"message"}
    if message:
        assert response.json()["message"] == message
    assert not RegistryReplica.objects.exists()


def test_without_a_notifications_token_the_endpoint_is_not_there(client, backend, settings) -> None:
    settings.REGISTRY_NOTIFICATIONS_TOKEN = ""

    response = report(client)

    assert response.status_code == 404
    assert "REGISTRY_NOTIFICATIONS_TOKEN" in response.json()["message"]


# --- The token endpoint during a window -------------------------------------------------------


@pytest.fixture
def agent(backend):
    organization = cluster_services.organization_create(slug="acme", name="Acme")
    cluster = cluster_services.cluster_create(organization=organization, name="CI")
    _token, secret = cluster_services.agent_token_create(cluster=cluster, description="agents")
    RegistryFactory(cluster=cluster, state=State.READY, backend=backend)
    namespace = f"acme/{cluster.pk.hex[:12]}"
    credentials = base64.b64encode(f"agent:{secret}".encode()).decode()
    return namespace, {"HTTP_AUTHORIZATION": f"Basic {credentials}"}


def test_a_push_during_the_window_is_refused_with_retry_after_and_a_pull_is_not(
    client, backend, agent
) -> None:
    namespace, auth = agent
    refuse_pushes(backend.pk, 120)

    push = client.get(
        "/registry/token", {"service": SERVICE, "scope": f"repository:{namespace}/a:pull,push"},
        **auth,
    )  # fmt: skip
    everything = client.get(
        "/registry/token", {"service": SERVICE, "scope": f"repository:{namespace}/a:*"}, **auth
    )
    pull = client.get(
        "/registry/token", {"service": SERVICE, "scope": f"repository:{namespace}/a:pull"}, **auth
    )

    assert push.status_code == 401
    seconds = int(push["Retry-After"])
    assert 119 <= seconds <= 120
    assert push.json() == {
        "message": MAINTENANCE.format(seconds),
        "errors": [{"code": "DENIED", "message": MAINTENANCE.format(seconds)}],
    }
    assert everything.status_code == 401
    assert pull.status_code == 200

    refuse_pushes(backend.pk, None)
    again = client.get(
        "/registry/token", {"service": SERVICE, "scope": f"repository:{namespace}/a:push"}, **auth
    )
    assert again.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_cached_credential_is_refused_at_once_in_the_process_that_opens_the_window(
    client, backend, agent, settings, django_assert_num_queries
) -> None:
    settings.HOT_CACHE_SECONDS = 3600
    hotcache.clear()
    namespace, auth = agent
    scope = {"service": SERVICE, "scope": f"repository:{namespace}/a:push"}
    assert client.get("/registry/token", scope, **auth).status_code == 200
    with django_assert_num_queries(0):  # warm: the window's end came with the namespace
        assert client.get("/registry/token", scope, **auth).status_code == 200

    refuse_pushes(backend.pk, 60)

    with django_assert_num_queries(1):
        refused = client.get("/registry/token", scope, **auth)
    assert refused.status_code == 401
    assert refused.json()["message"] == MAINTENANCE.format(refused["Retry-After"])


def test_another_backends_window_does_not_refuse_this_ones_pushes(client, backend, agent) -> None:
    other = RegistryBackend.objects.create(
        name="eu-1", api_url="http://eu:5000", public_host="eu", token_service="eu-registry"
    )
    refuse_pushes(other.pk, 120)
    namespace, auth = agent

    response = client.get(
        "/registry/token", {"service": SERVICE, "scope": f"repository:{namespace}/a:push"}, **auth
    )

    assert response.status_code == 200


# --- Asking for a collection -------------------------------------------------------------------


def test_one_collection_per_backend_audited_and_enqueued_on_commit(
    backend, broker_queue, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        collection = collection_request(backend, trigger="operator", actor="sam")

    assert (collection.state, collection.requested_by) == ("queued", "sam")
    assert broker_queue.drain("maintenance") == [
        ("registries.garbage_collection", (str(collection.pk),))
    ]
    [row] = AuditEvent.objects.filter(type="GARBAGE_COLLECTION_REQUESTED")
    assert (row.subject_name, row.data) == (
        "default",
        {"collection": str(collection.pk), "trigger": "operator"},
    )

    with pytest.raises(CollectionActive) as refused:
        collection_request(backend, trigger="operator", actor="kim")

    assert str(collection.pk) in str(refused.value)
    assert "already queued" in str(refused.value)
    assert GarbageCollection.objects.count() == 1
    assert AuditEvent.objects.filter(type="GARBAGE_COLLECTION_REQUESTED").count() == 1


def test_a_window_with_no_replica_reporting_fails_and_grants_pushes_again(backend) -> None:
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    seen: list[tuple[str, str]] = []

    ran = collection_run(
        str(collection.pk),
        on_progress=lambda c: seen.append((c.state, c.progress.get("message", ""))),
    )

    assert ran is not None
    assert ran.state == CollectionState.FAILED
    assert ran.error == NO_REPLICA.format(backend="default")
    states = [state for i, (state, _) in enumerate(seen) if i == 0 or state != seen[i - 1][0]]
    assert states == ["draining", "read_only", "restoring", "failed"]
    backend.refresh_from_db()
    assert backend.pushes_refused_until is None
    audited = AuditEvent.objects.filter(type__startswith="GARBAGE").order_by("occurred_at")
    assert [e.type for e in audited] == [
        "GARBAGE_COLLECTION_REQUESTED",
        "GARBAGE_COLLECTION_STARTED",
        "GARBAGE_COLLECTION_FINISHED",
    ]
    assert collection_run(str(collection.pk)) is None  # a message delivered again: nothing


def test_a_window_without_a_configuration_fails_before_refusing_anything(backend, settings) -> None:
    settings.REGISTRY_GC_CONFIG = ""
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)

    ran = collection_run(str(collection.pk))

    assert ran is not None
    assert ran.state == CollectionState.FAILED
    assert ran.error.startswith("No registry configuration to collect backend default's garbage")
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None


# --- The schedule and stale windows ------------------------------------------------------------


def test_the_schedule_asks_for_due_backends_only(
    backend, settings, broker_queue, django_capture_on_commit_callbacks
) -> None:
    settings.REGISTRY_GC_INTERVAL_SECONDS = 3600.0
    RegistryBackend.objects.filter(pk=backend.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=2)
    )
    RegistryBackend.objects.create(
        name="fresh", api_url="http://f:5000", public_host="f", token_service="f", gc_config="/x"
    )

    with django_capture_on_commit_callbacks(execute=True):
        requested = collections_schedule()

    assert [(c.backend.name, c.trigger, c.requested_by) for c in requested] == [
        (DEFAULT_BACKEND, "schedule", "schedule")
    ]
    assert collections_schedule() == []  # its last collection is recent now
    settings.REGISTRY_GC_INTERVAL_SECONDS = 0.0
    GarbageCollection.objects.update(created_at=timezone.now() - dt.timedelta(hours=5))
    GarbageCollection.objects.update(state="succeeded")
    assert collections_schedule() == []


def test_a_window_whose_heartbeat_stopped_is_ended_and_its_refusal_cleared(backend) -> None:
    long_ago = timezone.now() - dt.timedelta(seconds=STALE_HEARTBEAT_SECONDS + 5)
    stale = GarbageCollection.objects.create(
        backend=backend, trigger="schedule", state="collecting", heartbeat_at=long_ago
    )
    refuse_pushes(backend.pk, 3600)

    assert collections_repair() == 1

    stale.refresh_from_db()
    assert stale.state == "failed"
    assert stale.error.startswith("The window's worker stopped while collecting (no heartbeat")
    assert stale.finished_at is not None
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None
    assert AuditEvent.objects.filter(type="GARBAGE_COLLECTION_FINISHED").count() == 1


def test_a_long_window_with_a_fresh_heartbeat_is_left_running(backend, settings) -> None:
    settings.REGISTRY_GC_TIME_LIMIT_SECONDS = 60
    running = GarbageCollection.objects.create(
        backend=backend, trigger="schedule", state="collecting", heartbeat_at=timezone.now(),
        created_at=timezone.now() - dt.timedelta(hours=5),
    )  # fmt: skip
    refuse_pushes(backend.pk, 3600)

    assert collections_end_stale() == 0

    running.refresh_from_db()
    assert running.state == "collecting"
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is not None


def test_the_repair_sends_a_lost_message_again_to_the_maintenance_queue(
    backend, broker_queue
) -> None:
    lost = GarbageCollection.objects.create(
        backend=backend, trigger="schedule", created_at=timezone.now() - dt.timedelta(minutes=2)
    )
    GarbageCollection.objects.create(  # just asked for: its message may be on its way
        backend=RegistryBackend.objects.create(
            name="other", api_url="http://o:5000", public_host="o", token_service="o"
        ),
        trigger="schedule",
    )
    broker.drain("maintenance")

    assert collections_repair() == 0

    assert broker.drain("maintenance") == [("registries.garbage_collection", (str(lost.pk),))]
    lost.refresh_from_db()
    assert lost.state == "queued"


def test_a_collection_no_worker_took_is_ended_after_the_time_limit(backend, settings) -> None:
    settings.REGISTRY_GC_TIME_LIMIT_SECONDS = 60
    queued = GarbageCollection.objects.create(
        backend=backend, trigger="schedule", created_at=timezone.now() - dt.timedelta(minutes=2)
    )

    assert collections_end_stale() == 1

    queued.refresh_from_db()
    assert queued.state == "failed"
    assert queued.error.startswith("No maintenance worker took the collection within 60 s")


def test_a_window_taken_away_by_the_repair_stops_without_writing_over_it(backend) -> None:
    """A stalled worker whose window the repair ended: its next write finds the row failed and
    it stops, leaving the repair's record (no second end, no FINISHED row of its own)."""
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    long_ago = timezone.now() - dt.timedelta(seconds=STALE_HEARTBEAT_SECONDS + 5)

    def stall(shown: GarbageCollection) -> None:
        if shown.state == CollectionState.READ_ONLY:
            GarbageCollection.objects.filter(pk=shown.pk).update(heartbeat_at=long_ago)
            assert collections_end_stale() == 1

    collection_run(str(collection.pk), on_progress=stall)

    collection.refresh_from_db()
    assert collection.state == CollectionState.FAILED
    assert collection.error.startswith("The window's worker stopped while read_only")
    assert AuditEvent.objects.filter(type="GARBAGE_COLLECTION_FINISHED").count() == 1
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None


def test_a_replica_read_write_right_before_garbage_collect_stops_the_window(
    backend, settings, tmp_path
) -> None:
    """r2 restarted read-write after the switch (its runner asked nothing first): the window
    stops before garbage-collect, naming it, and ends read-write with pushes granted."""
    filesystem_config(tmp_path, settings)
    read_only_replicas(backend, "r1", "r2")
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)

    def restart_r2(shown: GarbageCollection) -> None:
        if shown.progress.get("message", "").startswith("deciding on --delete-untagged"):
            RegistryReplica.objects.filter(name="r2").update(mode="readwrite")

    ran = collection_run(str(collection.pk), on_progress=restart_r2)

    assert ran is not None
    assert ran.state == CollectionState.FAILED
    assert ran.error.startswith(
        "Replica(s) r2 of backend default were not known to be read-only right before "
        "garbage-collect"
    )
    assert (ran.output, ran.blobs_deleted, ran.tags_verified) == ("", 0, 0)  # never started
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None


def read_only_replicas(backend: RegistryBackend, *names: str) -> None:
    now = timezone.now()
    for name in names:
        RegistryReplica.objects.create(
            backend=backend, name=name, mode="readonly", seen_at=now, mode_changed_at=now
        )


def filesystem_config(tmp_path, settings) -> None:
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}\n")
    settings.REGISTRY_GC_CONFIG = str(config)


@pytest.mark.integration  # docker-registry garbage-collect runs
def test_a_failed_garbage_collect_is_still_verified(backend, settings, tmp_path) -> None:
    """garbage-collect fails (here on a storage with repositories and no blob): it may have
    deleted blobs already, so the kept tags are verified all the same."""
    filesystem_config(tmp_path, settings)
    (tmp_path / "docker/registry/v2/repositories/team/app").mkdir(parents=True)
    read_only_replicas(backend, "r1")
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    states: list[str] = []

    ran = collection_run(
        str(collection.pk),
        on_progress=lambda c: states.append(c.state) if states[-1:] != [c.state] else None,
    )

    assert ran is not None
    assert states == ["draining", "read_only", "collecting", "restoring", "verifying", "failed"]
    assert "error enumerating blobs" in ran.error
    assert ran.storage_bytes_after == ran.storage_bytes_before == 0
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None


def test_the_refusal_is_estimated_from_succeeded_collections_only(backend, settings) -> None:
    """A failed collection that stopped after a second says nothing of how long one takes: the
    first refusal counts the default estimate (300 s) after the drain and two switches."""
    started = timezone.now() - dt.timedelta(hours=1)
    GarbageCollection.objects.create(
        backend=backend, trigger="operator", state="failed", started_at=started,
        finished_at=started + dt.timedelta(seconds=1),
    )  # fmt: skip
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    refused: list[float] = []

    def watch(shown: GarbageCollection) -> None:
        if shown.state == CollectionState.DRAINING and not refused:
            until = RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until
            assert until is not None
            refused.append((until - timezone.now()).total_seconds())

    collection_run(str(collection.pk), on_progress=watch)

    assert 300 < refused[0] <= 302  # drain 0 s, two switches of 1 s, the estimate


def test_an_interrupted_window_still_restores_and_finishes_then_raises(backend) -> None:
    """Ctrl-C under `registry_gc --wait` (or a worker's shutdown): the window grants pushes
    again and records its end before the interruption goes on."""
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    interrupted: list[str] = []

    def interrupt(shown: GarbageCollection) -> None:
        if shown.state == CollectionState.READ_ONLY and not interrupted:
            interrupted.append(shown.state)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collection_run(str(collection.pk), on_progress=interrupt)

    collection.refresh_from_db()
    assert collection.state == CollectionState.FAILED
    assert collection.error == "The collection was interrupted (KeyboardInterrupt)."
    assert collection.finished_at is not None
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None
    assert AuditEvent.objects.filter(type="GARBAGE_COLLECTION_FINISHED").count() == 1


def test_the_collector_gets_what_the_time_limit_leaves_after_switching_back_and_verifying(
    settings,
) -> None:
    settings.REGISTRY_GC_TIME_LIMIT_SECONDS = 3600
    settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS = 120.0

    assert collector_timeout(180.0) == 3600 - 180 - 120 - 900
    assert collector_timeout(3000.0) < 0


def test_a_refusal_left_without_a_window_is_cleared(backend) -> None:
    refuse_pushes(backend.pk, 3600)

    assert collections_end_stale() == 0
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None


# --- Operators: the REST API, the command, the console -----------------------------------------


URL = "/v2/operator/registry-backends/default/garbage-collections"


@pytest.fixture
def operator_api(make_api) -> Api:
    return staff(
        make_api(scopes=[ApiScope.READ_REGISTRY_BACKENDS, ApiScope.WRITE_REGISTRY_BACKENDS])
    )


def test_the_operators_api_asks_for_lists_and_shows_collections(
    operator_api: Api, backend, broker_queue, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        created = operator_api.post(URL)

    assert created.status_code == 202, created.content
    body = created.json()
    assert (body["backend"], body["state"], body["requested_by"]) == ("default", "queued", "sam")
    assert body["failures"] == []
    assert broker_queue.drain("maintenance") == [("registries.garbage_collection", (body["id"],))]

    again = operator_api.post(URL)
    assert again.status_code == 409
    assert body["id"] in again.json()["message"]

    listed = operator_api.get(URL)
    assert [c["id"] for c in listed.json()] == [body["id"]]
    shown = operator_api.get(f"{URL}/{body['id']}")
    assert shown.json()["id"] == body["id"]
    assert operator_api.get(f"{URL}/00000000-0000-0000-0000-000000000000").status_code == 404
    assert (
        operator_api.get("/v2/operator/registry-backends/nope/garbage-collections").status_code
        == 404
    )


def test_the_operators_api_needs_the_write_scope_to_ask(make_api, backend) -> None:
    reader = staff(make_api(scopes=[ApiScope.READ_REGISTRY_BACKENDS]))

    response = reader.post(URL)

    assert response.status_code == 403
    assert not GarbageCollection.objects.exists()


def test_the_command_queues_a_collection_and_refuses_a_second(
    backend, broker_queue, django_capture_on_commit_callbacks
) -> None:
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("registry_gc", stdout=out)

    collection = GarbageCollection.objects.get()
    assert out.getvalue() == (
        f"Collection {collection.pk} of backend default queued: a maintenance worker runs it "
        "(`manage.py registry_gc default --wait` follows it).\n"
    )
    with pytest.raises(CommandError, match="already queued"):
        call_command("registry_gc", "default")
    with pytest.raises(CommandError, match="No registry backend named 'nope'"):
        call_command("registry_gc", "nope")


def test_the_command_with_wait_runs_it_prints_progress_and_fails_with_what_to_do(backend) -> None:
    out = StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("registry_gc", "--wait", stdout=out)

    assert str(failed.value) == NO_REPLICA.format(backend="default")
    lines = out.getvalue().splitlines()
    assert lines[0] == "draining: pushes refused; uploads in flight finish"
    assert "read_only: replicas going read-only" in lines
    assert "restoring: replicas going read-write" in lines
    assert lines[-1] == (
        "failed: freed –; 0 blobs and 0 manifests deleted, 0 uploads purged; 0 tags verified, "
        "0 missing"
    )


def test_the_console_action_asks_for_a_collection(operator, backend, broker_queue) -> None:
    response = operator.post(
        "/admin/registries/registrybackend/",
        {"action": "collect_garbage", "_selected_action": [backend.pk]},
        follow=True,
    )

    assert response.status_code == 200
    collection = GarbageCollection.objects.get()
    assert (collection.trigger, collection.requested_by) == ("operator", "operator")
    assert "garbage collection queued" in response.content.decode()
    page = operator.get(f"/admin/registries/garbagecollection/{collection.pk}/change/")
    assert page.status_code == 200
    assert "no replica reports to the control plane" in page.content.decode()


def test_the_console_lists_collections_with_their_failures_and_the_replicas(
    operator, backend, client
) -> None:
    report(client, replica="r1")
    collection = GarbageCollection.objects.create(
        backend=backend, trigger="schedule", state="failed", storage_bytes_before=5_000_000,
        storage_bytes_after=1_200_000, missing=1, error="Verification found 1 ...",
    )  # fmt: skip
    registry = RegistryFactory(backend=backend, state=State.READY)
    collection.failures.create(
        registry=registry, repository=f"{registry.namespace}/app", tag="v1", kind="blob",
        digest="sha256:" + "a" * 64, detail="404",
    )  # fmt: skip

    listed = operator.get("/admin/registries/garbagecollection/").content.decode()
    shown = operator.get(
        f"/admin/registries/garbagecollection/{collection.pk}/change/"
    ).content.decode()
    replicas = operator.get("/admin/registries/registryreplica/").content.decode()

    assert "3.8 MB" in listed  # freed
    assert f"{registry.namespace}/app" in shown
    assert "sha256:" + "a" * 64 in shown
    assert "r1: read-write (heard from" in shown
    assert "r1" in replicas


# --- The heartbeat thread, failed saves, the cache after an interruption (review 18b) ---------


def claimed_window(backend: RegistryBackend) -> maintenance._Window:
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    GarbageCollection.objects.filter(pk=collection.pk).update(
        state=CollectionState.DRAINING, heartbeat_at=timezone.now()
    )
    collection.refresh_from_db()
    return maintenance._Window(collection, None)


@pytest.mark.django_db(transaction=True)  # the heartbeat thread sees the rows
def test_a_silent_step_longer_than_the_stale_threshold_keeps_its_window(
    backend, monkeypatch
) -> None:
    """A step that writes nothing for longer than the stale threshold (garbage-collect on a
    large storage): the heartbeat thread beats meanwhile, so the repair leaves the window."""
    monkeypatch.setattr(maintenance, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(maintenance_schedule, "STALE_HEARTBEAT_SECONDS", 0.6)
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    ended: list[int] = []

    def silent(shown: GarbageCollection) -> None:
        if shown.state == CollectionState.DRAINING and not ended:
            time.sleep(1.5)
            ended.append(collections_end_stale())

    ran = collection_run(str(collection.pk), on_progress=silent)

    assert ended == [0]
    assert ran is not None
    assert ran.state == CollectionState.FAILED
    assert ran.error == NO_REPLICA.format(backend="default")  # not the repair's message


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_keeps_the_refusal_ahead_while_restoring(backend, monkeypatch) -> None:
    """A rolling switch back to read-write may outlast the refusal restore() sets: each beat
    while restoring keeps it ahead."""
    monkeypatch.setattr(maintenance, "HEARTBEAT_SECONDS", 0.1)
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)
    ahead: list[float] = []

    def restoring(shown: GarbageCollection) -> None:
        if shown.state == CollectionState.RESTORING and not ahead:
            soon = timezone.now() + dt.timedelta(seconds=1)
            RegistryBackend.objects.filter(pk=backend.pk).update(pushes_refused_until=soon)
            time.sleep(0.5)
            until = RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until
            assert until is not None
            ahead.append((until - timezone.now()).total_seconds())

    collection_run(str(collection.pk), on_progress=restoring)

    assert ahead
    assert ahead[0] > 60  # two switch timeouts of 1 s and the margin
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None


def test_a_failed_save_leaves_the_state_as_it_was_and_a_long_reason_is_cut(backend) -> None:
    window = claimed_window(backend)

    with pytest.raises(TypeError):  # progress that cannot be saved: any failed write
        window.step(CollectionState.READ_ONLY, object(), 0, None)  # type: ignore[arg-type]

    assert window.collection.state == CollectionState.DRAINING
    window.collection.delete_untagged_reason = "team/" + "x" * 600
    window.step(CollectionState.READ_ONLY, "replicas going read-only", 0, None)  # not taken
    saved = GarbageCollection.objects.get(pk=window.collection.pk)
    assert saved.state == CollectionState.READ_ONLY
    assert len(saved.delete_untagged_reason) == 512


def stub_collector(tmp_path, settings, digest: str) -> None:
    """A collector that prints that it deletes ``digest``, then nothing for 30 s."""
    script = tmp_path / "slow-registry"
    script.write_text(f"#!/bin/sh\necho 'blob eligible for deletion: {digest}'\nexec sleep 30\n")
    script.chmod(0o755)
    settings.REGISTRY_GC_BINARY = str(script)


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.integration  # a collector process runs
def test_a_silent_collector_is_killed_once_its_window_is_ended(tmp_path, settings) -> None:
    stub_collector(tmp_path, settings, DIGEST)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()

    with pytest.raises(CollectorError, match="its maintenance window was ended") as raised:
        garbage_collect(str(tmp_path / "registry.yml"), delete_untagged=False, stop=stop)

    assert time.monotonic() - started < 10
    assert raised.value.deleted_blobs == (DIGEST,)


@pytest.mark.integration  # a collector process runs
def test_an_interrupted_collector_says_what_it_had_deleted(tmp_path, settings) -> None:
    stub_collector(tmp_path, settings, DIGEST)

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as raised:
        garbage_collect(str(tmp_path / "registry.yml"), delete_untagged=False, on_line=interrupt)

    assert raised.value.deleted_blobs == (DIGEST,)  # type: ignore[attr-defined]


def test_a_cache_that_cannot_be_cleared_hides_neither_failure(backend, tmp_path, settings) -> None:
    """Redis unreachable (nothing listens on 127.0.0.1:9201): the window still names the
    replica that was not read-only after garbage-collect, and says the cache was not cleared."""
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  cache:\n    blobdescriptor: redis\n  filesystem:\n"
        f"    rootdirectory: {tmp_path}\nredis:\n  addr: 127.0.0.1:9201\n"
    )
    settings.REGISTRY_GC_CONFIG = str(config)
    window = claimed_window(backend)

    dropped, forgot = window.forget((DIGEST,))
    with pytest.raises(maintenance.WindowFailed) as raised:
        window.check_read_only(["r2"], "after", forgot)

    assert dropped == 0
    assert "Cannot drop the blob-descriptor cache entries" in forgot
    assert str(raised.value).startswith("Replica(s) r2 of backend default were not known")
    assert str(raised.value).endswith(forgot)


@pytest.mark.integration  # a collector process runs
@pytest.mark.django_db(transaction=True)
def test_a_window_ended_under_a_silent_collector_kills_it_and_forgets_its_blobs(
    backend, settings, tmp_path, monkeypatch
) -> None:
    """The repair ends the window while garbage-collect prints nothing: the heartbeat thread
    finds the row taken, the collector is killed at once, the blob it had deleted leaves the
    Redis blob-descriptor cache, and the repair's record is left as it is."""
    monkeypatch.setattr(maintenance, "HEARTBEAT_SECONDS", 0.1)
    stub_collector(tmp_path, settings, DIGEST)
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  cache:\n    blobdescriptor: redis\n  filesystem:\n"
        f"    rootdirectory: {tmp_path}\nredis:\n  addr: 127.0.0.1:6379\n  db: 6\n"
    )
    settings.REGISTRY_GC_CONFIG = str(config)
    cache = redis.Redis(host="127.0.0.1", port=6379, db=6)
    cache.hset(f"blobs::{DIGEST}", "size", 1)
    cache.sadd("repository::team/app::blobs", DIGEST)
    read_only_replicas(backend, "r1")
    collection = collection_request(backend, trigger="operator", actor="sam", enqueue=False)

    def repair() -> None:  # what collections_end_stale writes, once the collector runs
        deciding = GarbageCollection.objects.filter(
            pk=collection.pk, progress__message__startswith="deciding on --delete-untagged"
        )
        deadline = time.monotonic() + 10
        while not deciding.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # garbage-collect started meanwhile, and prints nothing more
        GarbageCollection.objects.filter(pk=collection.pk).update(
            state=CollectionState.FAILED, error="ended by the repair"
        )
        connection.close()

    ender = threading.Thread(target=repair)
    ender.start()
    started = time.monotonic()
    try:
        collection_run(str(collection.pk))
    finally:
        ender.join(timeout=20)
        left = (
            cache.exists(f"blobs::{DIGEST}"),
            cache.sismember("repository::team/app::blobs", DIGEST),
        )
        cache.delete(f"blobs::{DIGEST}", "repository::team/app::blobs")

    assert time.monotonic() - started < 15  # not the collector's 30 s
    assert left == (0, 0)
    collection.refresh_from_db()
    assert (collection.state, collection.error) == (CollectionState.FAILED, "ended by the repair")
    assert AuditEvent.objects.filter(type="GARBAGE_COLLECTION_FINISHED").count() == 0
