"""The measures at scale (issue 15, item 5: canaries and the reconciler scale with backends and due
work, not with registries):

- **P9**: P3 (threads) with 10,000 ready registries and beat running the canaries every 5 s,
  against the no-op's round trip under the same canaries: a new cluster's registry
  must not wait behind canaries. Tasks the routing sends to another queue than provisioning's
  get a worker of their own, as production runs them.
- **P10**: one reconcile pass (``registries_reconcile()`` in the driver) over 100,000 registry
  rows, mostly ready and published, in milliseconds (absolute), after ``ANALYZE``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bench import workers
from bench.latency import (
    SAMPLE_TIMEOUT,
    WARMUP_SAMPLES,
    Api,
    LatencyRounds,
    first_queue_sample,
    memoized,
    noop_sample,
    percentile,
    product_queues,
    provision_queue,
)
from bench.measures import Measure, Result, progress
from bench.measures.tasks import statement_kind
from bench.seed import ready_only, realistic_mix, seed_to

if TYPE_CHECKING:
    from bench.stack import Stack

P9_REGISTRIES = 10_000
P9_SAMPLES = 10
P9_CANARY_INTERVAL = 5.0
P10_REGISTRIES = 100_000
P10_PASSES = 5

NOTES = [
    f"**P9**: {P9_REGISTRIES:,} ready registries (clusters, hosted queues, published URLs) "
    f"copied in; beat started with `REGISTRY_CANARY_INTERVAL_SECONDS={P9_CANARY_INTERVAL:g}`; "
    "one worker for the provisioning queue and, when the routing sends tasks elsewhere (the "
    "canaries), one for those queues. Each round: the no-op's round trip with beat stopped "
    f"and nothing queued ({P9_SAMPLES} samples), then beat started and, from its first canary "
    f"round on, {P9_SAMPLES} first hosted queues spread over a canary interval, each followed by "
    "a no-op under the same load; queues purged between rounds. Ratio = p50 under canaries / "
    "the no-op's p50 under the same canaries (A/B in the same conditions, as every other "
    "measure); the idle no-op's p50 is in the details.",
    f"**P10**: {P10_REGISTRIES:,} registry rows copied in (3 % deleted, 1 % failed, 0.5 % in "
    "flight, the rest ready with published URLs), then `ANALYZE`; `registries_reconcile()` "
    f"in the bench process, one pass to warm up, then {P10_PASSES} timed passes (ms, absolute).",
]


# --- P9 ---------------------------------------------------------------------------------------


def p9(stack: Stack, rounds: int) -> LatencyRounds:
    from django.utils import timezone

    from registries.models import Registry

    stack.django()
    seed_to(P9_REGISTRIES, ready_only, prefix="bench-p9", counted=Registry.objects.ready().count)
    environment = {"REGISTRY_CANARY_INTERVAL_SECONDS": f"{P9_CANARY_INTERVAL:g}"}
    queue = provision_queue()
    others = sorted(product_queues() - {queue})
    api = Api(stack, "bench-p9")
    result = LatencyRounds()
    started = [workers.worker(stack, queues=[queue], environment=environment, name="provision")]
    if others:
        started.append(workers.worker(stack, queues=others, environment=environment, name="others"))
    canaried = 0
    waiting: list[int] = []
    loaded: list[float] = []
    idle: list[float] = []
    # What the canaries cost the machine: the CPU of their worker and of the registry while beat
    # runs (seconds of CPU, seconds of wall time), the provisioning worker's contention.
    canary_wall = 0.0
    canary_pids = {"worker": [process.pid for process in started[1:]], "registry": []}
    if stack.registry is not None:
        canary_pids["registry"].append(stack.registry.pid)
    canary_cpu = dict.fromkeys(canary_pids, 0.0)
    try:
        for _ in range(WARMUP_SAMPLES):
            first_queue_sample(api)
            noop_sample(queue)
        for number in range(rounds):
            idle += [noop_sample(queue) for _ in range(P9_SAMPLES)]
            beat = workers.beat(stack, environment=environment)
            since = timezone.now()
            baseline: list[float] = []  # the no-op under the same canaries
            cpu_before = {k: sum(map(workers.cpu_seconds, p)) for k, p in canary_pids.items()}
            wall_before = time.monotonic()
            candidate: list[float] = []
            created: list[float] = []
            try:
                # Beat's first canary round is one interval after its start; the samples then
                # spread over the next interval.
                time.sleep(P9_CANARY_INTERVAL + 0.5)
                for _ in range(P9_SAMPLES):
                    waiting.append(workers.waiting(queue))
                    took, visible = first_queue_sample(api)
                    created.append(took)
                    candidate.append(SAMPLE_TIMEOUT if visible is None else visible)
                    if visible is None:
                        result.notes.append(f"a URL took > {SAMPLE_TIMEOUT:g}s: round cut short")
                        break
                    try:  # the no-op under the same load: queued behind canaries, or not
                        baseline.append(noop_sample(queue))
                    except RuntimeError:
                        baseline.append(SAMPLE_TIMEOUT)
                    time.sleep(P9_CANARY_INTERVAL / P9_SAMPLES)
            finally:
                beat.stop()
            for kind, pids in canary_pids.items():
                canary_cpu[kind] += sum(map(workers.cpu_seconds, pids)) - cpu_before[kind]
            canary_wall += time.monotonic() - wall_before
            if hasattr(Registry, "canary_at"):
                canaried += Registry.objects.filter(canary_at__gte=since).count()
            workers.purge([queue, *others])
            loaded += baseline
            result.add(candidate, baseline, created)
            progress(
                f"P9 round {number + 1}: p50 {result.candidate_p50[-1] * 1000:.1f} ms vs "
                f"{result.baseline_p50[-1] * 1000:.1f} ms (no-op, same canaries); up to "
                f"{max(waiting)} messages waiting on {queue!r}"
            )
    finally:
        for process in started:
            process.stop()
    share = {kind: cpu / canary_wall if canary_wall else 0.0 for kind, cpu in canary_cpu.items()}
    per_round = {kind: value * P9_CANARY_INTERVAL * 1000 for kind, value in share.items()}
    consumers = f"a worker for {queue!r}" + (f", one for {', '.join(others)}" if others else "")
    result.notes[:0] = [
        f"{P9_REGISTRIES:,} ready registries, canaries every {P9_CANARY_INTERVAL:g}s "
        f"({canaried:,} registries canaried), {consumers}",
        f"the no-op idle (beat stopped, nothing queued) p50 {percentile(idle, 0.5) * 1000:.1f} "
        f"ms, under the canaries {percentile(loaded, 0.5) * 1000:.1f} ms",
        f"the canaries' worker and the registry used {sum(share.values()):.0%} of one core "
        f"while beat ran ({per_round['worker']:.0f} + {per_round['registry']:.0f} ms of CPU a "
        f"{P9_CANARY_INTERVAL:g} s round)",
        f"at most {max(waiting)} messages waiting on {queue!r}",
    ]
    return result


def _p9_run(stack: Stack, rounds: int) -> Result:
    data: LatencyRounds = memoized(stack, "P9", lambda: p9(stack, rounds))
    return Result(ratios=data.ratios("p50"), detail=data.detail("p50"), extra=data.__dict__)


# --- P10 --------------------------------------------------------------------------------------


def _p10_run(stack: Stack, rounds: int) -> Result:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from registries.reconciler import registries_reconcile

    stack.django()
    seed_to(P10_REGISTRIES, realistic_mix, prefix="bench-p10")
    registries_reconcile()  # warm: connection, plans, and whatever was really due
    passes: list[float] = []
    repairs: list[int] = []
    for _ in range(max(rounds, P10_PASSES)):
        started = time.perf_counter()
        report = registries_reconcile()
        passes.append((time.perf_counter() - started) * 1000)
        repairs.append(report.repairs)
    with CaptureQueriesContext(connection) as captured:  # one more, for what it asks (untimed)
        registries_reconcile()
    statements = [(float(query["time"]) * 1000, query["sql"]) for query in captured]
    slowest = max(statements, default=(0.0, ""))
    progress(f"P10: passes {', '.join(f'{ms:.1f}' for ms in passes)} ms")
    return Result(
        ratios=passes,
        detail=f"{P10_REGISTRIES:,} registry rows (3 % deleted, 1 % failed, 0.5 % in flight, "
        f"the rest ready and published); median of {len(passes)} passes after a first one; "
        f"repairs per pass: {', '.join(map(str, repairs))}; a pass: {len(statements)} "
        f"statements, {sum(ms for ms, _ in statements):.0f} ms in them as Django timed them, "
        f"the slowest {slowest[0]:.0f} ms ({statement_kind(slowest[1])})",
        extra={"passes_ms": passes, "repairs": repairs, "statements": statements},
    )


MEASURES: list[Measure] = [
    Measure(
        id="P9",
        title=f"P3 (threads, p50) with {P9_REGISTRIES:,} ready registries and canaries running, "
        "vs a no-op's round trip under the same canaries",
        goal="≤ 2×",
        check=lambda result: result.median <= 2,
        run=_p9_run,
        shortfall="Measured 2026-12-01 (make bench on a fresh clone of 0bff8da): no message "
        "waited on the provisioning queue (the canaries have their own queue and worker), so a "
        "new cluster's registry no longer waits behind canaries (about 60 s before issue 15). "
        "What is left is P3's own cost: P9 is P3's path (threads, p50) under the canaries' load "
        "(their worker and the registry used 41 % of one of the 2 cores at one round every 5 s, "
        "12 times production's default), and P3's floor in the same run was 2.82× the no-op "
        "at p50 (threads) with no canaries at all, above P9's 2× (see P3 and P4).",
    ),
    Measure(
        id="P10",
        title=f"one reconcile pass with {P10_REGISTRIES:,} registries",
        goal="≤ 50 ms",
        check=lambda result: result.median <= 50,
        run=_p10_run,
        unit=" ms",
        shortfall="Profiled 2026-12-01: a pass reads only due rows and a 2,000-cluster window, "
        "and EXPLAIN shows each select under 25 ms. A pass took 41-66 ms at load 4-5 and "
        "88-150 ms at load 7-9 on this shared 2-core machine: the time over 50 ms grows with "
        "the machine's load, so meeting the goal steadily needs a machine not shared with it.",
    ),
]
