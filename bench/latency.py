"""What the worker-side measures share (:mod:`bench.measures.tasks`, :mod:`bench.measures.scale`):
the REST API and the agent endpoint as the bench drives them, one sample of each side of a
latency measure (a first hosted queue, the no-op task, the floor), polling, percentiles, and the
memo through which one run feeds several lines of the report.

Both sides are observed the same way: polled 1 ms apart with one cheap read (PostgreSQL for the
published variable's row, Redis for the no-op's key), timed from the rows' own times where the
product writes them.
"""

from __future__ import annotations

import io
import math
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from bench import workers

if TYPE_CHECKING:
    from bench.stack import Stack

HOSTED_SHAPE = "LINUX_AMD64_2X4"
QUEUE_KEY = "linux"
#: Seconds between two polls, for the registry's URL and for a no-op task alike.
POLL_SECONDS = 0.001
#: The first samples of a worker, not counted.
WARMUP_SAMPLES = 3
#: A first hosted queue whose URL takes longer than this is recorded at this figure (P9 before
#: canaries had a queue of their own: the rest of its round is skipped).
SAMPLE_TIMEOUT = 20.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (as the console's provisioning p50 and p95)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- memo: one run feeds several lines of the report ----------------------------------------

_memo: dict[tuple[int, str], Any] = {}


def memoized(stack: Stack, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per stack and key: the p50 and p95 lines of P3 come from one run, P8's
    Celery line from P4's drains."""
    slot = (id(stack), key)
    if slot not in _memo:
        _memo[slot] = compute()
    return _memo[slot]


# --- the REST API and the agent endpoint ----------------------------------------------------


class Api:
    """The REST API of one organization, with a token of every scope made in the driver."""

    def __init__(self, stack: Stack, slug: str) -> None:
        from django.core.management import call_command

        from clusters.models import ApiScope

        stack.django()
        out = io.StringIO()
        call_command(
            "create_api_token", slug, "bench", "--scopes", ",".join(ApiScope.values), "--quiet",
            stdout=out, stderr=io.StringIO(),
        )  # fmt: skip
        self.base_url = stack.base_url
        self.url = f"{stack.base_url}/v2/organizations/{slug}/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {out.getvalue().strip()}"
        self.agent = requests.Session()

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.session.post(self.url + path, json=body, timeout=30)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:500]}")
        result: dict[str, Any] = response.json()
        return result

    def cluster_with_token(self) -> tuple[str, str]:
        """A new cluster and the secret of an agent token of it."""
        cluster = self.post("clusters", {"name": f"bench-{uuid.uuid4().hex[:16]}"})
        token = self.post(f"clusters/{cluster['id']}/tokens", {"description": "bench"})
        return str(cluster["id"]), str(token["token"])

    def url_visible(self, secret: str) -> bool:
        """Whether the agent environment endpoint serves the registry's URL to the queue."""
        from registries.models import REGISTRY_URL_VARIABLE

        response = self.agent.get(
            f"{self.base_url}/v3/agent/environment",
            params={"queue": QUEUE_KEY},
            headers={"Authorization": f"Token {secret}"},
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(f"agent environment: {response.status_code} {response.text[:500]}")
        return REGISTRY_URL_VARIABLE in response.json()["env"]


def _poll(check: Callable[[], bool], timeout: float, since: float) -> float | None:
    """Call ``check`` every POLL_SECONDS until it is true: the seconds from ``since`` (a
    ``time.perf_counter()``) to the start of the check that was true (so an HTTP poll's own
    duration is not charged to what it observes), or None after ``timeout``."""
    while True:
        asked = time.perf_counter()
        if check():
            return asked - since
        if asked - since > timeout:
            return None
        time.sleep(POLL_SECONDS)


def published_check(cluster_id: str) -> Callable[[], bool]:
    """Whether the cluster's ``BUILDKITE_HOSTED_REGISTRY_URL`` row is committed: one indexed
    ``SELECT`` on the bench's own connection (autocommit), a fraction of what a request to the
    agent endpoint costs the machine the worker shares."""
    from django.db import connection

    from clusters.models import AgentEnvironmentVariable
    from registries.models import REGISTRY_URL_VARIABLE

    table = AgentEnvironmentVariable._meta.db_table  # the model's, not input
    sql = f"SELECT 1 FROM {table} WHERE cluster_id = %s AND name = %s"  # noqa: S608
    arguments = (uuid.UUID(cluster_id), REGISTRY_URL_VARIABLE)

    def check() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(sql, arguments)
            return cursor.fetchone() is not None

    return check


def first_queue_sample(
    api: Api, *, timeout: float = SAMPLE_TIMEOUT, started: list[float] | None = None
) -> tuple[float, float | None]:
    """A new cluster's first hosted queue through the REST API: ``(seconds the POST took,
    seconds from the registry's creation until the agent sees the URL)``; the second is None
    after ``timeout``.

    Both ends are the rows' own times, on this machine's one clock: from the registry row's
    ``created_at`` (stamped in the transaction that creates the queue) to the published
    variable's ``updated_at`` (stamped by the worker just before its commit), or the poll that saw
    the URL if that is earlier. Not from the POST's 201: a worker may publish the URL before the
    answer reaches the client (a poll from the 201 would read 0), or after (the POST's way back
    would be charged to it). The polls only wait for the URL: the row's (cheap, see
    ``published_check``), then the agent endpoint's answer. ``started`` collects
    the seconds from the registry's creation to its attempt's first transition (the event
    ``pending -> provisioning``: the creating transaction's rest and commit, the message, the
    worker's pickup, the attempt's locks)."""
    from clusters.models import AgentEnvironmentVariable
    from registries.models import REGISTRY_URL_VARIABLE, Registry, RegistryEvent, State

    cluster_id, secret = api.cluster_with_token()
    began = time.perf_counter()
    api.post(
        f"clusters/{cluster_id}/queues",
        {"key": QUEUE_KEY, "hostedAgents": {"instanceShape": HOSTED_SHAPE}},
    )
    answered = time.perf_counter()
    answered_wall = time.time()
    seen = _poll(published_check(cluster_id), timeout, since=answered)
    if seen is not None and not api.url_visible(secret):  # published, not served yet
        seen = _poll(lambda: api.url_visible(secret), timeout, since=answered)
    if seen is None:
        return answered - began, None
    registry_created = Registry.objects.values_list("created_at", flat=True).get(
        cluster_id=cluster_id
    )
    published = AgentEnvironmentVariable.objects.values_list("updated_at", flat=True).get(
        cluster_id=cluster_id, name=REGISTRY_URL_VARIABLE
    )
    visible = min(answered_wall + seen, published.timestamp())
    if started is not None:
        attempt = RegistryEvent.objects.filter(
            registry__cluster_id=cluster_id, to_state=State.PROVISIONING
        ).values_list("created_at", flat=True)[:1]
        started += [(moment - registry_created).total_seconds() for moment in attempt]
    return answered - began, visible - registry_created.timestamp()


def noop_sample(queue: str, *, timeout: float = SAMPLE_TIMEOUT) -> float:
    """A no-op task's round trip: from sending it to ``queue`` until its Redis key exists."""
    from bench.tasks import noop, redis_client

    client = redis_client()
    key = f"bench:noop:{uuid.uuid4().hex}"
    sent = time.perf_counter()
    noop.apply_async((key,), queue=queue)
    seen = _poll(lambda: bool(client.exists(key)), timeout, since=sent)
    client.delete(key)
    if seen is None:
        raise RuntimeError(f"the no-op task did not run within {timeout:g}s")
    return seen


def floor_sample(cluster_id: str, queue: str, *, timeout: float = SAMPLE_TIMEOUT) -> float:
    """The floor of a P3 sample, on a cluster without a registry: the rows a first hosted queue
    must write (the pending registry and its event, by the product's compiled INSERTs, and a
    durable COMMIT), the message on commit, and the floor attempt (``bench.tasks.provision_floor``:
    the statements an attempt cannot do without, by hand) until the variable's row is there.
    Timed from just before the registry's INSERT (where P3's ``created_at`` is stamped) to the
    poll that sees the row, so it carries no HTTP, ORM save, signal or log line: no
    implementation of the product's path can be faster on this machine."""
    from django.conf import settings
    from django.db import transaction

    from bench.tasks import provision_floor
    from controlplane.compiled import insert_rows
    from registries.models import Registry, RegistryEvent, State

    began = time.perf_counter()
    with transaction.atomic():
        registry = Registry(
            cluster_id=cluster_id,
            namespace=f"bench-floor/{uuid.uuid4().hex[:12]}",
            driver=settings.REGISTRY_DRIVER,
        )
        insert_rows([registry])
        insert_rows([RegistryEvent(registry=registry, to_state=State.PENDING)])
        registry_id = str(registry.pk)
        transaction.on_commit(lambda: provision_floor.apply_async((registry_id,), queue=queue))
    seen = _poll(published_check(cluster_id), timeout, since=began)
    if seen is None:
        raise RuntimeError(f"the floor attempt did not publish within {timeout:g}s")
    return seen


def provision_queue() -> str:
    from registries.services import PROVISION_TASK

    return workers.task_queue(PROVISION_TASK)


def product_queues() -> set[str]:
    """Every queue the routing sends one of the product's tasks to."""
    from controlplane.celery import app

    app.loader.import_default_modules()
    return {workers.task_queue(name) for name in app.tasks if not name.startswith("celery.")}


@dataclass
class LatencyRounds:
    """Per round: the candidate's and the baseline's p50 and p95 (seconds)."""

    candidate_p50: list[float] = field(default_factory=list)
    candidate_p95: list[float] = field(default_factory=list)
    baseline_p50: list[float] = field(default_factory=list)
    baseline_p95: list[float] = field(default_factory=list)
    created_p50: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, candidate: list[float], baseline: list[float], created: list[float]) -> None:
        self.candidate_p50.append(percentile(candidate, 0.5))
        self.candidate_p95.append(percentile(candidate, 0.95))
        self.baseline_p50.append(percentile(baseline, 0.5))
        self.baseline_p95.append(percentile(baseline, 0.95))
        self.created_p50.append(percentile(created, 0.5))

    def ratios(self, which: str) -> list[float]:
        candidate, baseline = (
            getattr(self, f"candidate_{which}"),
            getattr(self, f"baseline_{which}"),
        )
        return [c / b for c, b in zip(candidate, baseline, strict=True)]

    def detail(self, which: str) -> str:
        def ms(values: list[float]) -> str:
            return f"{statistics.median(values) * 1000:.1f} ms"

        other = "p95" if which == "p50" else "p50"
        other_ratio = statistics.median(self.ratios(other))
        return (
            f"{which} {ms(getattr(self, f'candidate_{which}'))} vs no-op "
            f"{ms(getattr(self, f'baseline_{which}'))} (median of rounds); {other} ratio "
            f"{other_ratio:.2f}×; the queue's POST took {ms(self.created_p50)} (not counted)"
            + "".join(f"; {note}" for note in self.notes)
        )
