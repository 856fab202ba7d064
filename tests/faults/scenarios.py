"""Fault-injection scenarios: each starts a whole stack (``tests.support.stack``), injects one
fault into a real process, and measures what became of every registry it asked for.

A scenario never asserts: it returns an :class:`Outcome` (recovered, lost, duplicated, time to
recover, and any ``problems`` seen on the way), so that ``make faults`` can count failed trials
as well as passed ones. ``test_faults`` asserts on the outcome.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.support.outcomes import EVENTS_QUERY, REGISTRIES_QUERY, count_registries
from tests.support.processes import poll
from tests.support.stack import Stack

HOSTED = {"hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"}}
#: The longest any scenario waits for registries to recover before counting them lost.
RECOVERY_TIMEOUT = 60.0

StackFactory = Callable[..., Stack]


@dataclass
class Outcome:
    """What one trial of a scenario left behind."""

    scenario: str
    expected: int  # registries the scenario asked for (clusters whose hosted queue got a 201)
    recovered: int = 0  # ... that ended ready, with their URL published, one event sequence each
    lost: int = 0  # ... that did not end ready within RECOVERY_TIMEOUT
    duplicated: int = 0  # extra registries, extra provisionings, or interleaved event sequences
    seconds_to_recover: float = 0.0  # from the end of the fault to the last registry ready
    bound: float | None = None  # the time to recover the scenario promises, if any
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        within = self.bound is None or self.seconds_to_recover <= self.bound
        return (
            self.recovered == self.expected
            and not (self.lost or self.duplicated)
            and (within and not self.problems)
        )


def interval(stack: Stack) -> float:
    return float(stack.env["REGISTRY_RECONCILE_INTERVAL_SECONDS"])


def create_cluster(stack: Stack, name: str) -> str:
    response = stack.api("POST", "clusters", json={"name": name})
    response.raise_for_status()
    return str(response.json()["id"])


def create_hosted_queue(stack: Stack, cluster_id: str, key: str = "linux") -> requests.Response:
    return stack.api("POST", f"clusters/{cluster_id}/queues", json={"key": key, **HOSTED})


def registry_states(stack: Stack) -> dict[str, str]:
    return dict(stack.sql("select cluster_id::text, state from registries_registry"))


def wait_until_ready(stack: Stack, cluster_ids: list[str], *, since: float) -> float | None:
    """Seconds from ``since`` until every cluster's registry is ready; None on timeout."""

    def all_ready() -> bool:
        try:
            states = registry_states(stack)
        except Exception:  # noqa: BLE001 - the database may be on its way back
            return False
        return all(states.get(cluster_id) == "ready" for cluster_id in cluster_ids)

    remaining = since + RECOVERY_TIMEOUT - time.monotonic()
    return time.monotonic() - since if poll(all_ready, timeout=remaining) else None


def audit(stack: Stack, outcome: Outcome, cluster_ids: list[str], recovered_in: float | None):
    """Count what became of each cluster's registry: ready with its URL published and one
    unbroken event sequence (recovered), missing or not ready (lost), or more than one registry
    or provisioning (duplicated)."""
    outcome.seconds_to_recover = round(recovered_in if recovered_in is not None else -1.0, 2)
    counts = count_registries(
        cluster_ids, stack.sql(REGISTRIES_QUERY, [cluster_ids]), stack.sql(EVENTS_QUERY)
    )
    outcome.recovered += counts.recovered
    outcome.lost += counts.lost
    outcome.duplicated += counts.duplicated
    outcome.problems.extend(counts.problems)
    outcome.facts["provisionings"] = counts.provisionings
    return outcome


# --- the scenarios --------------------------------------------------------------------------


def worker_killed_mid_provisioning(stack_factory: StackFactory) -> Outcome:
    """SIGKILL the Celery worker while it provisions (held mid-request by a registry stopped
    with SIGSTOP), then start a new worker: the registry ends ready, through one event sequence.
    Recovery goes through the attempt's lease (the task's hard time limit plus one interval)."""
    stack = stack_factory()
    outcome = Outcome("worker SIGKILLed mid-provisioning", expected=1)
    cluster_id = create_cluster(stack, "killed")
    stack.registry.send_signal(signal.SIGSTOP)
    try:
        response = create_hosted_queue(stack, cluster_id)
        if response.status_code != 201:
            outcome.problems.append(f"queue create answered {response.status_code}")
        provisioning = poll(
            lambda: registry_states(stack).get(cluster_id) == "provisioning", timeout=15
        )
        if not provisioning:
            outcome.problems.append("the worker never started provisioning")
        stack.worker.kill(signal.SIGKILL)
    finally:
        stack.registry.send_signal(signal.SIGCONT)
    killed = time.monotonic()
    stack.worker.start()
    recovered_in = wait_until_ready(stack, [cluster_id], since=killed)
    lease = float(stack.env["CELERY_TASK_TIME_LIMIT"]) + interval(stack)
    outcome.bound = lease + interval(stack) + 2
    audit(stack, outcome, [cluster_id], recovered_in)
    outcome.facts["events"] = [
        f"{a or 'new'}->{b}"
        for a, b in stack.sql(
            "select from_state, to_state from registries_registryevent order by created_at, id"
        )
    ]
    return outcome


def redis_stopped_during_create(stack_factory: StackFactory) -> Outcome:
    """Stop Redis, create a hosted queue (the API answers 201: the pending row is the record),
    keep Redis down for longer than one interval, start it again: the reconciler enqueues the
    lost provisioning, and the registry is ready within one interval of Redis being back (plus
    the attempt itself)."""
    stack = stack_factory()
    outcome = Outcome("Redis stopped while a hosted queue is created", expected=1)
    cluster_id = create_cluster(stack, "no-broker")
    stack.redis.stop()
    down = time.monotonic()
    started = time.monotonic()
    response = create_hosted_queue(stack, cluster_id)
    outcome.facts["create_seconds_with_redis_down"] = round(time.monotonic() - started, 2)
    if response.status_code != 201:
        outcome.problems.append(f"queue create answered {response.status_code}: {response.text}")
    registry = stack.api("GET", f"clusters/{cluster_id}/registry").json()
    synced = next((c for c in registry.get("conditions", []) if c["type"] == "Synced"), {})
    outcome.facts["synced_while_down"] = synced.get("reason")
    if synced.get("reason") != "EnqueueFailed":
        outcome.problems.append(f"Synced while Redis was down: {synced}")
    time.sleep(max(0.0, down + 1.5 * interval(stack) - time.monotonic()))
    stack.redis.start()
    back = time.monotonic()
    recovered_in = wait_until_ready(stack, [cluster_id], since=back)
    outcome.bound = interval(stack) + 1.5  # one interval, plus the attempt and a reconnect
    return audit(stack, outcome, [cluster_id], recovered_in)


def registry_stopped(stack_factory: StackFactory) -> Outcome:
    """Stop the registry, create a hosted queue: provisioning retries with backoff, then fails
    after REGISTRY_PROVISION_MAX_ATTEMPTS. Start the registry: the reconciler retries the
    registry by itself and it becomes ready. Then stop it again: the canary drops Ready, and
    a passing canary brings it back once the registry is up."""
    stack = stack_factory()
    outcome = Outcome("registry process stopped", expected=1)
    cluster_id = create_cluster(stack, "no-registry")
    stack.registry.stop()
    if create_hosted_queue(stack, cluster_id).status_code != 201:
        outcome.problems.append("queue create failed")
    failed = poll(lambda: registry_states(stack).get(cluster_id) == "failed", timeout=30)
    if not failed:
        outcome.problems.append(f"never failed: {registry_states(stack)}")
    attempts = stack.sql(
        "select e.to_state, e.attempt, e.created_at from registries_registryevent e "
        "join registries_registry r on r.id = e.registry_id where r.cluster_id::text = %s "
        "and e.from_state = 'provisioning' order by e.created_at",
        [cluster_id],
    )
    outcome.facts["attempts_before_failed"] = [f"{state}#{n}" for state, n, _ in attempts]
    gaps = [
        round((b[2] - a[2]).total_seconds(), 2)
        for a, b in zip(attempts, attempts[1:], strict=False)
    ]
    outcome.facts["seconds_between_attempts"] = gaps
    max_attempts = int(stack.env["REGISTRY_PROVISION_MAX_ATTEMPTS"])
    if [state for state, _, _ in attempts] != ["pending"] * (max_attempts - 1) + ["failed"]:
        outcome.problems.append(f"attempts: {outcome.facts['attempts_before_failed']}")
    stack.registry.start()
    back = time.monotonic()
    recovered_in = wait_until_ready(stack, [cluster_id], since=back)
    retry_after = float(stack.env["REGISTRY_FAILED_RETRY_AFTER_SECONDS"])
    outcome.bound = retry_after + 2 * interval(stack) + 1
    audit(stack, outcome, [cluster_id], recovered_in)

    def ready_condition() -> dict[str, Any]:
        body = stack.api("GET", f"clusters/{cluster_id}/registry").json()
        return next(c for c in body["conditions"] if c["type"] == "Ready")

    canary_timeout = 3 * float(stack.env["REGISTRY_CANARY_INTERVAL_SECONDS"]) + 5
    stack.registry.stop()
    if not poll(lambda: ready_condition()["reason"] == "CanaryFailed", timeout=canary_timeout):
        outcome.problems.append(f"the canary did not drop Ready: {ready_condition()}")
    stack.registry.start()
    if not poll(lambda: ready_condition()["status"] == "True", timeout=canary_timeout):
        outcome.problems.append(f"the canary did not restore Ready: {ready_condition()}")
    outcome.facts["ready_after_canary"] = ready_condition()["reason"]
    return outcome


def postgresql_restarted_during_burst(stack_factory: StackFactory, clusters: int = 10) -> Outcome:
    """Create hosted queues for ``clusters`` clusters at once and restart PostgreSQL while their
    registries are being provisioned (the registry is held with SIGSTOP meanwhile, so that
    attempts are in flight, and queued behind them, when the database goes away): every
    registry ends ready. Attempts that lost the database are found by the reconciler once their
    lease expires."""
    stack = stack_factory()
    cluster_ids = [create_cluster(stack, f"burst-{n}") for n in range(clusters)]
    outcome = Outcome("PostgreSQL restarted during a burst of provisioning", expected=clusters)
    stack.registry.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=clusters) as pool:
            statuses = list(
                pool.map(lambda c: create_hosted_queue(stack, c).status_code, cluster_ids)
            )
        if statuses != [201] * clusters:
            outcome.problems.append(f"answers: {sorted(statuses)}")
        in_flight = poll(
            lambda: list(registry_states(stack).values()).count("provisioning"), timeout=15
        )
        outcome.facts["attempts_in_flight_at_restart"] = in_flight
        stack.postgres.restart(mode="fast")
    finally:
        stack.registry.send_signal(signal.SIGCONT)
    restarted = time.monotonic()
    recovered_in = wait_until_ready(stack, cluster_ids, since=restarted)
    outcome.bound = float(stack.env["CELERY_TASK_TIME_LIMIT"]) + 2 * interval(stack) + 2
    return audit(stack, outcome, cluster_ids, recovered_in)


def concurrent_first_hosted_queues(
    stack_factory: StackFactory, clusters: int = 20, queues_per_cluster: int = 5
) -> Outcome:
    """Create ``queues_per_cluster`` hosted queues in each of ``clusters`` clusters, all at once:
    exactly one registry and one provisioning per cluster."""
    stack = stack_factory()
    cluster_ids = [create_cluster(stack, f"race-{n}") for n in range(clusters)]
    outcome = Outcome(
        f"{clusters * queues_per_cluster} concurrent first hosted queues across {clusters} "
        "clusters",
        expected=clusters,
    )
    requests_ = [(c, f"q{n}") for n in range(queues_per_cluster) for c in cluster_ids]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(requests_)) as pool:
        statuses = list(pool.map(lambda r: create_hosted_queue(stack, *r).status_code, requests_))
    if statuses != [201] * len(requests_):
        outcome.problems.append(f"answers: {sorted(statuses)}")
    recovered_in = wait_until_ready(stack, cluster_ids, since=started)
    audit(stack, outcome, cluster_ids, recovered_in)
    registries = stack.sql("select count(*) from registries_registry")[0][0]
    outcome.facts["registries"] = registries
    outcome.duplicated += max(registries - clusters, 0)
    outcome.duplicated += max(outcome.facts["provisionings"] - clusters, 0)
    return outcome


SCENARIOS: dict[str, Callable[[StackFactory], Outcome]] = {
    "worker_killed": worker_killed_mid_provisioning,
    "redis_stopped": redis_stopped_during_create,
    "registry_stopped": registry_stopped,
    "postgresql_restarted": postgresql_restarted_during_burst,
    "concurrent_first_queues": concurrent_first_hosted_queues,
}
