"""The worker-side measures: provisioning against a no-op task, statements, and a Celery
worker's memory (issue 15: P3, P4, P4b, P8); P9 and P10 at scale are in :mod:`bench.measures.scale`.

Every measure runs on the stack's processes (gunicorn, PostgreSQL, Redis, the registry) plus the
Celery workers and beat it starts itself (:mod:`bench.workers`), and seeds rows in bulk from the
driver process through the ORM with only the fields a row needs (so it follows the models as
they are). The baseline is the no-op task (:mod:`bench.tasks`), sent to the queue the product
routes provisioning to and observed the same way (a cheap poll, 1 ms apart):

- **P3** (per pool: threads and prefork, one worker of concurrency 4 each, as deploy/entrypoint
  starts it): from the registry row's creation for a cluster's first hosted queue (through the
  REST API) until its URL is published and served to the agent, against a no-op task's round
  trip and the floor (``bench.latency.floor_sample``); the sides in turn, p50 and p95 per round.
- **P4**: one threads worker draining 1,000 provisionings (pending registries seeded in bulk, their
  tasks enqueued while no worker runs) against 1,000 no-op tasks: first task started to last task
  finished, from the registries' event times and the no-op tasks' own timestamps. A third drain,
  the floor (``bench.tasks.provision_floor``: the attempt's statements alone, by hand), says how
  close to the no-op any attempt could come.
- **P8 (Celery)**: the resident memory of that worker (one process: threads) after each drain.
- **P4b**: SQL statements (``CaptureQueriesContext``) of ``cluster_create`` + ``queue_create``
  (the cluster's first hosted queue), with the statements listed.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import workers
from bench.latency import (
    HOSTED_SHAPE,
    QUEUE_KEY,
    SAMPLE_TIMEOUT,
    WARMUP_SAMPLES,
    Api,
    LatencyRounds,
    first_queue_sample,
    floor_sample,
    memoized,
    noop_sample,
    percentile,
    provision_queue,
)
from bench.measures import Measure, Result, progress, rss_mb
from bench.measures.shortfalls import ATTEMPT_SHORTFALL, P4B_SHORTFALL
from bench.seed import new_organization, seed_registries

if TYPE_CHECKING:
    from bench.stack import Stack

#: Samples of each side per round (P3).
P3_SAMPLES = 20
P4_TASKS = 1_000

NOTES = [
    "**Workers** (P3, P4, P9): `celery -A controlplane worker` as `deploy/entrypoint` starts "
    f"it (concurrency {workers.CONCURRENCY}, `--without-gossip --without-mingle`), with the "
    "stack's environment; the no-op task (`bench.tasks`, bench settings only) goes to the "
    "queue the routing gives provisioning and appends the time to a Redis list. Both sides are "
    "waited for by polling 1 ms apart with one cheap read: PostgreSQL for the published "
    "variable's row (one indexed `SELECT` on the bench's connection), Redis for the no-op's "
    "key; then one request to the agent environment endpoint (HTTP, the cluster's agent token) "
    "must serve the URL. Polling the endpoint itself 1 ms apart, as earlier runs did, loaded "
    "the 2 cores the worker runs on with a gunicorn request and a PostgreSQL query a "
    "millisecond (a queue without its URL is never cached), which the no-op's side did not "
    "carry.",
    "**P3**: a new cluster and agent token first (not timed), then the hosted queue through the "
    "REST API; timed by the rows' own times: from the registry row's `created_at` (in the "
    "creating transaction; the task is enqueued on commit) to the published variable's "
    "`updated_at` (the worker's, just before its commit), not from the 201, which a worker may "
    "beat. The agent endpoint is asked once the row is there and must serve "
    f"`BUILDKITE_HOSTED_REGISTRY_URL` (else it is polled until it does, and that poll ends the "
    f"sample). {P3_SAMPLES} samples of "
    f"each side a round, in turn, after {WARMUP_SAMPLES} warm-up samples; nearest-rank p50 "
    "and p95 per round, ratio per round. A third side, the floor (in the details): on a new "
    "cluster, the rows a first hosted queue must write (the pending registry and its event, "
    "by the product's compiled INSERTs, and a durable COMMIT) from the bench, the message on "
    "commit, and P4's floor attempt, timed from before the registry's INSERT to the poll that "
    "sees the variable's row: what no implementation of the path can beat here.",
    f"**P4**: {P4_TASKS:,} pending registries copied in (`COPY`, from ORM instances: every "
    "field's default as the models have it) and their tasks enqueued with no worker running; "
    "then one threads worker drains them. Time = first attempt's first event to the last "
    "registry's last event (`RegistryEvent.created_at`); for the no-ops, first to last task "
    "timestamp. Worker start-up is in neither. A third drain each round, the floor, runs the "
    "statements an attempt must send (`BEGIN`, the cluster and registry locks, two events, the "
    "registry's `UPDATE`, the variable's upsert, `COMMIT`) as hand-written SQL in a bench task "
    "on 1,000 more pending registries: no implementation of the attempt can drain faster. P8 "
    "(Celery) is that worker's VmRSS after each drain (threads: one process).",
    "**P4b**: `CaptureQueriesContext` around `cluster_create` + `queue_create` (the cluster's "
    "first hosted queue) in the bench process; every statement psycopg sends is counted, "
    "`BEGIN`/`COMMIT` and savepoints included.",
]


# --- P3 ---------------------------------------------------------------------------------------


def p3(stack: Stack, rounds: int, pool: str) -> LatencyRounds:
    stack.django()
    api = Api(stack, f"bench-p3-{pool}")
    queue = provision_queue()
    result = LatencyRounds()
    process = workers.worker(stack, pool=pool)
    attempts_began: list[float] = []
    floors: dict[str, list[float]] = {"p50": [], "p95": []}  # per round, floor / no-op
    try:
        for _ in range(WARMUP_SAMPLES):
            first_queue_sample(api)
            noop_sample(queue)
            floor_sample(api.cluster_with_token()[0], queue)
        for number in range(rounds):
            candidate: list[float] = []
            baseline: list[float] = []
            created: list[float] = []
            floor: list[float] = []
            for sample in range(3 * P3_SAMPLES):  # candidate, no-op, floor, in turn
                side = (sample + number) % 3
                if side == 0:
                    took, visible = first_queue_sample(api, started=attempts_began)
                    if visible is None:
                        raise RuntimeError(f"no URL within {SAMPLE_TIMEOUT:g}s ({pool})")
                    candidate.append(visible)
                    created.append(took)
                elif side == 1:
                    baseline.append(noop_sample(queue))
                else:
                    floor.append(floor_sample(api.cluster_with_token()[0], queue))
            result.add(candidate, baseline, created)
            floors["p50"].append(percentile(floor, 0.5) / result.baseline_p50[-1])
            floors["p95"].append(percentile(floor, 0.95) / result.baseline_p95[-1])
            progress(
                f"P3 {pool} round {number + 1}: p50 {result.candidate_p50[-1] * 1000:.1f} ms vs "
                f"{result.baseline_p50[-1] * 1000:.1f} ms, p95 "
                f"{result.candidate_p95[-1] * 1000:.1f} ms vs "
                f"{result.baseline_p95[-1] * 1000:.1f} ms"
            )
    finally:
        process.stop()
    if attempts_began:
        result.notes.append(
            f"of which {percentile(attempts_began, 0.5) * 1000:.1f} ms (p50) until the attempt's "
            "first transition (the creating transaction's rest and commit, the message, the "
            "worker's pickup, the attempt's locks)"
        )
    result.notes.append(
        "the floor (the rows, a durable COMMIT, the message and the floor attempt, no HTTP or "
        "ORM) "
        + ", ".join(
            f"{which} {statistics.median(ratios):.2f}× the no-op's "
            f"({', '.join(f'{ratio:.2f}' for ratio in ratios)})"
            for which, ratios in floors.items()
        )
    )
    return result


#: Why P3 and P4 miss their goals: the cost of one provisioning attempt.


def _p3_line(pool: str, which: str, limit: float) -> Measure:
    def run(stack: Stack, rounds: int) -> Result:
        data: LatencyRounds = memoized(stack, f"P3 {pool}", lambda: p3(stack, rounds, pool))
        return Result(
            ratios=data.ratios(which),
            detail=data.detail(which),
            extra={"pool": pool, **data.__dict__},
        )

    return Measure(
        id=f"P3 {pool} {which}",
        title=f"first hosted queue created → URL visible to the agent, vs a no-op task's round "
        f"trip ({pool} pool, {which})",
        goal=f"≤ {limit:g}×",
        check=lambda result: result.median <= limit,
        run=run,
        shortfall=ATTEMPT_SHORTFALL,
    )


# --- P4 and P8 --------------------------------------------------------------------------------


@dataclass
class Drain:
    """One worker draining a queue: seconds from the first task's start to the last one's end,
    the worker's CPU time per task (ms, from the moment it was ready: its start-up is not in
    it) and its RSS (MB) at the end."""

    seconds: float
    cpu_ms_per_task: float
    rss_mb: float


@dataclass
class DrainRounds:
    provisionings: list[Drain] = field(default_factory=list)
    noops: list[Drain] = field(default_factory=list)
    #: The attempt's statements alone, by hand (``bench.tasks.provision_floor``): its floor.
    floors: list[Drain] = field(default_factory=list)

    def median(self, side: str, attribute: str) -> float:
        return float(statistics.median(getattr(drain, attribute) for drain in getattr(self, side)))


@contextmanager
def _draining(stack: Stack, count: int) -> Iterator[tuple[Any, Callable[[float], Drain]]]:
    """A threads worker started for a drain of ``count`` tasks, and how to sum it up (given the
    seconds it took) before it stops."""
    process = workers.worker(stack, pool="threads")
    started = workers.cpu_seconds(process.pid)

    def summed(seconds: float) -> Drain:
        cpu = workers.cpu_seconds(process.pid) - started
        return Drain(seconds, cpu * 1000 / count, rss_mb(process.pid))

    try:
        yield process, summed
    finally:
        process.stop()


def drain_provisionings(stack: Stack, count: int, *, floor: bool = False) -> Drain:
    """Seed ``count`` pending registries, enqueue their provisioning with no worker running, then
    start one (threads) and wait until every one is ready; the time from the first attempt's
    first event to the last registry's last event. With ``floor``, the tasks are the attempt's
    statements alone (``bench.tasks.provision_floor``), sent to the same queue."""
    from django.db.models import Max, Min

    from bench.tasks import FLOOR_TASK
    from controlplane.celery import app
    from registries.models import Registry, RegistryEvent, State
    from registries.services import PROVISION_TASK

    ids = seed_registries({State.PENDING: count}, prefix="bench-p4")
    task, queue = app.tasks[FLOOR_TASK if floor else PROVISION_TASK], provision_queue()
    for registry_id in ids:
        task.apply_async((str(registry_id),), queue=queue)
    with _draining(stack, count) as (process, summed):
        registries = Registry.objects.filter(pk__in=ids)

        def ready() -> int:
            if failed := registries.filter(state=State.FAILED).first():
                raise RuntimeError(f"registry {failed.pk} failed: {failed.last_error}")
            return registries.filter(state=State.READY).count()

        _wait_for(ready, count, what="provisionings", log=process.log)
        window = RegistryEvent.objects.filter(registry__in=ids).aggregate(
            first=Min("created_at"), last=Max("created_at")
        )
        return summed((window["last"] - window["first"]).total_seconds())


def drain_noops(stack: Stack, count: int) -> Drain:
    """Enqueue ``count`` no-op tasks with no worker running, start one (threads) and wait until
    every one ran; the time from the first to the last one's timestamp."""
    from bench.tasks import noop, redis_client

    client = redis_client()
    key = f"bench:drain:{uuid.uuid4().hex}"
    queue = provision_queue()
    for _ in range(count):
        noop.apply_async((key,), queue=queue)
    with _draining(stack, count) as (process, summed):
        _wait_for(lambda: int(client.llen(key)), count, what="no-op tasks", log=process.log)
        stamps = [float(stamp) for stamp in client.lrange(key, 0, -1)]
        client.delete(key)
        return summed(max(stamps) - min(stamps))


#: A drain that finishes no task for this long is stuck (a task that raises, say).
STALL_SECONDS = 60.0


def _wait_for(done: Callable[[], int], count: int, *, what: str, log: Callable[[], str]) -> None:
    """Wait until ``done()`` reaches ``count``; raise, with the worker's last errors, once it
    makes no progress for STALL_SECONDS."""
    last, progressed = -1, time.monotonic()
    while (finished := done()) < count:
        if finished != last:
            last, progressed = finished, time.monotonic()
        elif time.monotonic() - progressed > STALL_SECONDS:
            errors = [line[:600] for line in log().splitlines() if '"level": "ERROR"' in line]
            raise RuntimeError(
                f"{finished} of {count} {what} done, none for {STALL_SECONDS:g}s; the worker's "
                f"last errors: {errors[-3:]}"
            )
        time.sleep(0.2)


def p4(stack: Stack, rounds: int) -> DrainRounds:
    stack.django()
    workers.purge([provision_queue()])
    result = DrainRounds()
    for number in range(rounds):
        sides = ["provisionings", "noops", "floors"]
        for side in sides[number % 3 :] + sides[: number % 3]:
            if side == "noops":
                result.noops.append(drain_noops(stack, P4_TASKS))
            else:
                drain = drain_provisionings(stack, P4_TASKS, floor=side == "floors")
                getattr(result, side).append(drain)
        provisionings, noops, floor = result.provisionings[-1], result.noops[-1], result.floors[-1]
        progress(
            f"P4 round {number + 1}: {P4_TASKS} provisionings {provisionings.seconds:.2f}s "
            f"({provisionings.cpu_ms_per_task:.1f} ms CPU each), {P4_TASKS} no-ops "
            f"{noops.seconds:.2f}s ({noops.cpu_ms_per_task:.1f} ms CPU each), {P4_TASKS} floors "
            f"{floor.seconds:.2f}s ({floor.cpu_ms_per_task:.1f} ms CPU each); worker "
            f"{provisionings.rss_mb:.0f} MB"
        )
    return result


def _p4_run(stack: Stack, rounds: int) -> Result:
    data: DrainRounds = memoized(stack, "P4", lambda: p4(stack, rounds))
    ratios = [a.seconds / b.seconds for a, b in zip(data.provisionings, data.noops, strict=True)]
    floors = [a.seconds / b.seconds for a, b in zip(data.floors, data.noops, strict=True)]
    provisioning, noops = data.median("provisionings", "seconds"), data.median("noops", "seconds")
    floor = data.median("floors", "seconds")
    return Result(
        ratios=ratios,
        detail=f"{P4_TASKS:,} provisionings in {provisioning:.2f} s "
        f"({P4_TASKS / provisioning:.0f}/s, {data.median('provisionings', 'cpu_ms_per_task'):.1f} "
        f"ms of worker CPU each), {P4_TASKS:,} no-ops in {noops:.2f} s ({P4_TASKS / noops:.0f}/s, "
        f"{data.median('noops', 'cpu_ms_per_task'):.1f} ms CPU each); one threads worker, "
        f"concurrency {workers.CONCURRENCY}; the floor (the attempt's statements alone, by hand: "
        f"`bench.tasks.provision_floor`) {floor:.2f} s "
        f"({data.median('floors', 'cpu_ms_per_task'):.1f} ms CPU each), "
        f"{statistics.median(floors):.2f}× the no-ops "
        f"({', '.join(f'{ratio:.2f}' for ratio in floors)})",
        extra={side: [drain.__dict__ for drain in getattr(data, side)] for side in data.__dict__},
    )


def _p8_run(stack: Stack, rounds: int) -> Result:
    data: DrainRounds = memoized(stack, "P4", lambda: p4(stack, rounds))
    rss = [drain.rss_mb for drain in data.provisionings]
    return Result(
        ratios=rss,
        detail=f"VmRSS of the threads worker (one process, concurrency {workers.CONCURRENCY}) "
        f"after each drain of {P4_TASKS:,} provisionings (P4); after {P4_TASKS:,} no-ops: "
        f"{data.median('noops', 'rss_mb'):.0f} MB",
        extra={"worker_rss_mb": rss},
    )


# --- P4b --------------------------------------------------------------------------------------

_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)', re.I)


def statement_kind(sql: str) -> str:
    """``SELECT clusters_cluster``, ``INSERT registries_registry``, ``SAVEPOINT``..."""
    verb = sql.split(None, 1)[0].upper() if sql.strip() else "?"
    table = _TABLE.search(sql)
    return (
        f"{verb} {table[1]}" if table and verb in {"SELECT", "INSERT", "UPDATE", "DELETE"} else verb
    )


def creation_statements() -> list[str]:
    """The SQL of creating a cluster and its first hosted queue through the services, in the
    driver process (the broker message it enqueues is no statement)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from clusters import services

    organization = new_organization("bench-p4b")
    with CaptureQueriesContext(connection) as captured:
        cluster = services.cluster_create(
            organization=organization, name=f"bench-{uuid.uuid4().hex[:16]}"
        )
        services.queue_create(cluster=cluster, key=QUEUE_KEY, instance_shape=HOSTED_SHAPE)
    return [query["sql"] for query in captured.captured_queries]


def _p4b_run(stack: Stack, rounds: int) -> Result:
    stack.django()
    counts = []
    statements: list[str] = []
    for _ in range(rounds):
        statements = creation_statements()
        counts.append(float(len(statements)))
    # Their messages would provision registries nobody waits for: no worker runs now.
    workers.purge([provision_queue()])
    kinds = Counter(statement_kind(sql) for sql in statements)
    listed = ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in kinds.items())
    return Result(
        ratios=counts,
        detail=f"cluster_create + queue_create (first hosted queue): {listed}",
        extra={"statements": statements},
    )


MEASURES: list[Measure] = [
    Measure(
        id="P4b",
        title="SQL statements to create a cluster and its first hosted queue",
        goal="≤ 10",
        check=lambda result: result.median <= 10,
        run=_p4b_run,
        unit=" statements",
        shortfall=P4B_SHORTFALL,
    ),
    _p3_line("threads", "p50", 2),
    _p3_line("threads", "p95", 3),
    _p3_line("prefork", "p50", 2),
    _p3_line("prefork", "p95", 3),
    Measure(
        id="P4",
        title=f"one worker draining {P4_TASKS:,} queued provisionings vs {P4_TASKS:,} no-op tasks",
        goal="≤ 1.5×",
        check=lambda result: result.median <= 1.5,
        run=_p4_run,
        shortfall=ATTEMPT_SHORTFALL,
    ),
    Measure(
        id="P8 celery",
        title="RSS of one Celery worker after P4's load",
        goal="≤ 150 MB",
        check=lambda result: result.median <= 150,
        run=_p8_run,
        unit=" MB",
    ),
]
