"""The bench's worker-side pieces keep working (bench.workers, bench.tasks, bench.latency,
bench.seed, bench.measures.tasks and .scale):
the workers' command line and queues, the seeding (steady state: nothing for the reconciler to
repair), the statement list of P4b, the arithmetic of the rounds; and, as integration tests, a
worker of each pool and beat started for a stack, running the no-op task. Nothing here times
anything."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from kombu import Connection

from bench import latency, seed, workers
from bench import tasks as bench_tasks
from bench.measures import scale
from bench.measures import tasks as measures
from bench.stack import Stack
from clusters.models import AgentEnvironmentVariable, Cluster
from controlplane.beat_settings import KEY_PREFIX
from registries.models import Registry, State
from registries.reconciler import registries_reconcile
from registries.services import PROVISION_TASK
from tests.clusters.factories import ClusterFactory
from tests.support.processes import ROOT, poll
from tests.support.stack import RedisServer

# --- fast: no process, no timing ---------------------------------------------------------------


def test_the_worker_starts_as_the_entrypoint_starts_it() -> None:
    entrypoint = (ROOT / "deploy" / "entrypoint").read_text()
    assert f"CELERY_WORKER_CONCURRENCY:-{workers.CONCURRENCY}" in entrypoint
    assert "--without-gossip --without-mingle" in entrypoint
    argv = workers.worker_argv(name="w", pool="prefork", concurrency=2, queues=["a", "b"])
    assert argv[1:6] == ["-m", "celery", "-A", "controlplane", "worker"]
    assert " ".join(argv).endswith(
        "--pool prefork --concurrency 2 --without-gossip --without-mingle --hostname w@%h "
        "--queues a,b"
    )
    assert "--queues" not in workers.worker_argv(name="w", pool="threads", concurrency=4)
    with pytest.raises(ValueError, match="pool"):
        workers.worker_argv(name="w", pool="gevent", concurrency=4)


def test_queues_follow_the_routing() -> None:
    default = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    assert workers.task_queue(PROVISION_TASK) == latency.provision_queue() == default
    routes: dict[str, dict[str, Any]] = getattr(settings, "CELERY_TASK_ROUTES", None) or {}
    for task, route in routes.items():
        assert workers.task_queue(task) == route["queue"]
    assert {default, *(route["queue"] for route in routes.values())} <= latency.product_queues()


def test_cpu_seconds_of_a_process() -> None:
    assert workers.cpu_seconds(os.getpid()) > 0


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(20, 0, -1)]
    assert latency.percentile(values, 0.5) == 10
    assert latency.percentile(values, 0.95) == 19
    assert latency.percentile([3.0], 0.95) == 3


def test_rounds_give_one_ratio_each() -> None:
    rounds = latency.LatencyRounds()
    rounds.add([0.04, 0.05, 0.06], [0.01, 0.01, 0.02], [0.03, 0.03, 0.03])
    rounds.add([0.02, 0.02, 0.02], [0.01, 0.01, 0.01], [0.03, 0.03, 0.03])
    assert rounds.ratios("p50") == pytest.approx([5.0, 2.0])
    assert rounds.ratios("p95") == pytest.approx([3.0, 2.0])
    assert "p50 35.0 ms vs no-op 10.0 ms" in rounds.detail("p50")


def test_statement_kinds() -> None:
    kind = measures.statement_kind
    assert kind('SELECT "clusters_cluster"."id" FROM "clusters_cluster" WHERE 1') == (
        "SELECT clusters_cluster"
    )
    assert kind('INSERT INTO "registries_registry" ("id") VALUES (%s)') == (
        "INSERT registries_registry"
    )
    assert kind('UPDATE "registries_registry" SET "state" = %s') == "UPDATE registries_registry"
    assert kind('SAVEPOINT "s1_x1"') == "SAVEPOINT"


def test_the_realistic_mix_adds_up() -> None:
    mix = seed.realistic_mix(90_000)
    assert sum(mix.values()) == 90_000
    assert mix["ready"] == max(mix.values())


def test_every_measure_has_an_id_of_its_own() -> None:
    ids = [measure.id for measure in [*measures.MEASURES, *scale.MEASURES]]
    assert len(ids) == len(set(ids))
    assert {id.split()[0] for id in ids} == {"P3", "P4", "P4b", "P8", "P9", "P10"}


@pytest.mark.django_db
def test_creation_statements_are_counted_and_named() -> None:
    statements = measures.creation_statements()
    kinds = {measures.statement_kind(sql) for sql in statements}
    assert {"INSERT clusters_cluster", "INSERT clusters_queue", "INSERT registries_registry"} <= (
        kinds
    )
    assert Registry.objects.get().state == State.PENDING


@pytest.mark.postgresql
@pytest.mark.django_db
def test_seeded_registries_leave_the_reconciler_nothing_to_repair() -> None:
    mix = seed.realistic_mix(800)
    ids = seed.seed_registries(mix, prefix="seed")
    assert len(ids) == len(set(ids)) == Registry.objects.count() == 800
    for state, count in mix.items():
        assert Registry.objects.filter(state=state).count() == count
    ready = Registry.objects.filter(state=State.READY).select_related("cluster__organization")
    for registry in ready[:20]:
        assert registry.namespace.startswith(f"{registry.cluster.organization.slug}/")
        assert registry.url == f"{settings.REGISTRY_PUBLIC_HOST}/{registry.namespace}"
        assert registry.cluster.queues.get().hosted
        variable = AgentEnvironmentVariable.objects.get(cluster=registry.cluster)
        assert variable.value == registry.url
    assert not Registry.objects.filter(state=State.DELETED, cluster__isnull=False).exists()
    assert Cluster.objects.count() == 800 - mix["deleted"]
    assert registries_reconcile().repairs == 0


@pytest.mark.postgresql
@pytest.mark.django_db
def test_the_floor_task_leaves_a_registry_as_an_attempt_does() -> None:
    (registry_id,) = seed.seed_registries({State.PENDING: 1}, prefix="floor")

    bench_tasks.provision_floor.run(str(registry_id))

    registry = Registry.objects.get(pk=registry_id)
    assert registry.state == State.READY
    assert registry.attempts == 1
    assert registry.url == f"{settings.REGISTRY_PUBLIC_HOST}/{registry.namespace}"
    assert AgentEnvironmentVariable.objects.get(cluster=registry.cluster).value == registry.url
    assert list(registry.events.values_list("from_state", "to_state", "attempt")) == [
        (State.PENDING, State.PROVISIONING, 1),
        (State.PROVISIONING, State.READY, 1),
    ]


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_the_p3_floor_writes_the_rows_and_is_timed_to_the_published_row() -> None:
    from controlplane.celery import app

    cluster = ClusterFactory()
    assert not latency.published_check(str(cluster.pk))()

    app.conf.task_always_eager = True  # the floor task runs here, on commit
    try:
        seconds = latency.floor_sample(str(cluster.pk), "celery", timeout=5)
    finally:
        app.conf.task_always_eager = False

    assert 0 < seconds < 5
    assert latency.published_check(str(cluster.pk))()
    registry = Registry.objects.get(cluster=cluster)
    assert registry.state == State.READY
    assert list(registry.events.values_list("from_state", "to_state")) == [
        ("", State.PENDING),
        (State.PENDING, State.PROVISIONING),
        (State.PROVISIONING, State.READY),
    ]


# --- integration: real workers and beat -----------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def stack(tmp_path: Path, redis_server: RedisServer) -> Iterator[Stack]:
    """A stack that is not started: its environment and processes only (a private Redis as the
    broker), for the workers and beat under test."""
    unstarted = Stack(workdir=tmp_path / "stack", redis_url=redis_server.url(0))
    yield unstarted
    for process in unstarted.processes:
        process.stop()


@pytest.mark.integration
@pytest.mark.parametrize(("pool", "children"), [("threads", 0), ("prefork", 2)])
def test_a_worker_runs_the_noop_task(
    stack: Stack, redis_server: RedisServer, pool: str, children: int
) -> None:
    process = workers.worker(stack, pool=pool, concurrency=2)
    assert len(workers.process_ids(process)) == 1 + children
    key = f"bench:test:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_server.url(0))
    with Connection(redis_server.url(0)) as connection:
        from controlplane.celery import app

        app.send_task(bench_tasks.NOOP_TASK, (key,), connection=connection, queue="celery")
    assert poll(lambda: client.llen(key), timeout=30) == 1
    assert float(client.lindex(key, 0) or 0) > 0
    process.stop()
    assert "bench.noop" in process.log()


@pytest.mark.integration
def test_beat_starts_with_a_schedule_of_its_own(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    client.set(f"{KEY_PREFIX}:schedule-of-an-earlier-beat", "x")

    process = workers.beat(stack)

    assert process.running
    assert not client.exists(f"{KEY_PREFIX}:schedule-of-an-earlier-beat")
    assert poll(lambda: client.exists(f"{KEY_PREFIX}:schedule"), timeout=30)  # RedBeat's
    process.stop()


@pytest.mark.integration
def test_waiting_and_purge_read_the_broker(redis_server: RedisServer) -> None:
    from controlplane.celery import app

    url = redis_server.url(0)
    with Connection(url) as connection:
        for _ in range(3):
            app.send_task(bench_tasks.NOOP_TASK, ("k",), connection=connection, queue="q")
    assert workers.waiting("q", url) == 3
    assert workers.purge(["q"], url) == 3
    assert workers.waiting("q", url) == 0


@pytest.mark.integration
def test_the_noop_task_appends_the_time(redis_server: RedisServer) -> None:
    key = f"bench:test:{uuid.uuid4().hex}"
    with override_settings(REDIS_URL=redis_server.url(0)):
        bench_tasks._client = None
        try:
            bench_tasks.noop.run(key)
            stamps = bench_tasks.redis_client().lrange(key, 0, -1)
        finally:
            bench_tasks._client = None
    assert len(stamps) == 1
    assert float(stamps[0]) > 0
