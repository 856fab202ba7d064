"""The service's Prometheus metrics: every metric object is defined here, and the apps record
through them where each event happens (apps import this module; it imports no app).

Recording is cheap on purpose, since the token endpoint and the agent environment record on
every request: incrementing a counter or observing a histogram writes a few bytes into a
memory-mapped file, and never queries the database. What needs the database (registries by
state) is read at scrape time by a reader the registries app registers (``register_reader``).

Multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set (the settings set it before this module
is first imported), each process (gunicorn workers, Celery workers and their children, beat)
writes its own files in that folder, and ``/metrics`` adds them up, so the answer is the same
whichever gunicorn worker serves the scrape. Counters and histograms only: they add up across
processes without the bookkeeping a live gauge needs when a process dies. Every metric has a
label, so that a process writes its files at its first event rather than when it imports this
module: ``manage.py probe``, run every few seconds, must not leave files behind.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, generate_latest
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latencies of requests and registry calls, in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: How long a registry takes to become ready: seconds to an hour.
READY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# --- Registries -------------------------------------------------------------------------------
TIME_TO_READY = Histogram(
    "controlplane_registry_time_to_ready_seconds",
    "From the cluster's first hosted queue (its registry's creation) to the registry being ready, "
    "by registry driver.",
    ["driver"],
    buckets=READY_BUCKETS,
)
ATTEMPTS = Counter(
    "controlplane_registry_attempts",
    "Provisioning and deprovisioning attempts started.",
    ["operation"],
)
ATTEMPT_FAILURES = Counter(
    "controlplane_registry_attempt_failures",
    "Failed provisioning and deprovisioning attempts, by reason: unavailable (the registry did "
    "not answer), registry (another refusal), internal (ours), exhausted (no attempt finished "
    "within the budget).",
    ["operation", "reason"],
)

# --- Requests ---------------------------------------------------------------------------------
TOKEN_REQUESTS = Counter(
    "controlplane_registry_token_requests",
    "Registry token requests, by outcome (ok: a token was issued).",
    ["outcome"],
)
TOKEN_SECONDS = Histogram(
    "controlplane_registry_token_seconds",
    "How long the token endpoint took to answer, by outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
AGENT_ENVIRONMENT_REQUESTS = Counter(
    "controlplane_agent_environment_requests",
    "Agent environment requests (GET /v3/agent/environment), by outcome.",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "controlplane_webhook_deliveries",
    "The platform's webhook deliveries, by outcome: applied, repeated, ping, refused (401), "
    "invalid (400, 422), error.",
    ["outcome"],
)
WEBHOOK_REFUSALS = Counter(
    "controlplane_webhook_refusals",
    "Webhook deliveries refused with 401 (counted here instead of a log line each), by reason: "
    "unsigned (no signature or token), malformed (signature header), stale (timestamp), "
    "signature or token (matches no active secret of the organization, or no such organization).",
    ["reason"],
)
QUOTA_TRANSITIONS = Counter(
    "controlplane_registry_quota_transitions",
    "Registries whose usage crossed a quota limit, by the state reached (within, soft_exceeded, "
    "hard_exceeded, unlimited).",
    ["state"],
)

RETENTION_DELETED_TAGS = Counter(
    "controlplane_registry_retention_deleted_tags",
    "Tags deleted by retention policies, by what started the run (schedule, soft_limit, "
    "hard_limit, manual).",
    ["trigger"],
)
REGISTRY_NOTIFICATIONS = Counter(
    "controlplane_registry_notifications",
    "Distribution's events posted to /registry/notifications, by outcome: received (recorded), "
    "duplicate (an event id already recorded), ignored (a blob's push, pull or mount), unmatched "
    "(no registry has the repository's namespace), applied (to the inventory, by a worker).",
    ["outcome"],
)
REGISTRY_NOTIFICATION_REFUSALS = Counter(
    "controlplane_registry_notification_refusals",
    "Requests to /registry/notifications refused with nothing recorded, by reason: "
    "unconfigured (404), unauthorized (401), media_type (415), invalid (400), too_large (413).",
    ["reason"],
)

# --- Health canaries and the reconciler -------------------------------------------------------
CANARIES = Counter(
    "controlplane_canary_runs",
    "Health canaries run, by registry backend and result (passed, failed, maintenance).",
    ["backend", "result"],
)
CANARY_SECONDS = Histogram(
    "controlplane_canary_seconds",
    "How long a health canary took (push, read back, delete), by registry backend and result.",
    ["backend", "result"],
    buckets=LATENCY_BUCKETS,
)
RECONCILE_SECONDS = Histogram(
    "controlplane_reconcile_pass_seconds",
    "How long reconcile passes took, by outcome (ran; skipped: another held the lease); its "
    "_count counts the passes.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
RECONCILE_REPAIRS = Counter(
    "controlplane_reconcile_repairs",
    "Repairs made by reconcile passes: created, enqueued, republished, retried.",
    ["repair"],
)

# --- Usage scans ------------------------------------------------------------------------------
USAGE_SCANS = Counter(
    "controlplane_usage_scans",
    "Registry usage scans, by registry backend and outcome (scanned, failed).",
    ["backend", "outcome"],
)
USAGE_SCAN_SECONDS = Histogram(
    "controlplane_usage_scan_seconds",
    "How long a registry's usage scan took (reading the registry and applying), by outcome.",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
USAGE_SCAN_MANIFESTS = Counter(
    "controlplane_usage_scan_manifests_fetched",
    "Manifests the usage scans fetched from the registries (known ones are not fetched again).",
    ["backend"],
)

# --- Garbage collection windows ----------------------------------------------------------------
GARBAGE_COLLECTIONS = Counter(
    "controlplane_garbage_collections",
    "Garbage collections in a maintenance window, by registry backend and outcome (succeeded, "
    "failed).",
    ["backend", "outcome"],
)
GARBAGE_COLLECTION_WINDOW_SECONDS = Histogram(
    "controlplane_garbage_collection_window_seconds",
    "How long a backend refused pushes for a garbage collection (draining to read-write again), "
    "by outcome.",
    ["outcome"],
    buckets=(5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0),
)
GARBAGE_COLLECTION_FREED_BYTES = Counter(
    "controlplane_garbage_collection_freed_bytes",
    "Bytes of storage garbage collections freed, by registry backend (where it can be measured).",
    ["backend"],
)

# --- Verification after garbage collection ----------------------------------------------------
VERIFICATION_TAGS = Counter(
    "controlplane_registry_verification_tags",
    "Tags checked by the verification after a garbage collection (manifest, index members, "
    "every blob), by registry backend.",
    ["backend"],
)
VERIFICATION_MISSING = Counter(
    "controlplane_registry_verification_missing",
    "What the verification after a garbage collection found missing, by kind: manifest, blob "
    "(for each tag that needs it), registry (a registry that could not be checked).",
    ["kind"],
)

# --- Celery -----------------------------------------------------------------------------------
TASKS = Counter(
    "controlplane_celery_tasks",
    "Celery tasks that ended, by name and outcome (succeeded, failed, retried, revoked).",
    ["task", "outcome"],
)
TASK_SECONDS = Histogram(
    "controlplane_celery_task_seconds",
    "How long Celery tasks ran, by name.",
    ["task"],
    buckets=LATENCY_BUCKETS,
)

#: HTTP status -> outcome, for the endpoints counted by outcome.
HTTP_OUTCOMES = {
    200: "ok",
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    406: "invalid",
    413: "invalid",
    422: "invalid",
    429: "throttled",
    503: "unavailable",
}


def http_outcome(status: int) -> str:
    """A bounded label for an HTTP answer (a label per status code would do too, but names read
    better on a dashboard): see ``HTTP_OUTCOMES``; any other 2xx is ok, anything else error."""
    if status in HTTP_OUTCOMES:
        return HTTP_OUTCOMES[status]
    return "ok" if 200 <= status < 300 else "error"


def stopwatch() -> Callable[[], float]:
    """``elapsed = stopwatch()``; ``elapsed()`` is the seconds since."""
    started = time.perf_counter()
    return lambda: time.perf_counter() - started


# --- Exposition -------------------------------------------------------------------------------
_collectors: list[GaugeReader] = []


class GaugeReader(Collector):
    """A gauge whose values are read when ``/metrics`` is scraped, in the process that answers
    it only: ``read()`` returns ``{label value: value}`` (registries by state, from the
    database). A reader that fails leaves its gauge out of that scrape, not the whole answer."""

    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]
    ) -> None:
        self.name, self.documentation, self.label, self.read = name, documentation, label, read

    def collect(self) -> Iterable[Any]:
        try:
            values = self.read()
        except Exception:
            logger.exception("metrics.reader_failed", extra={"metric": self.name})
            return
        gauge = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for label_value, value in sorted(values.items()):
            gauge.add_metric([label_value], value)
        yield gauge


def register_reader(reader: GaugeReader) -> None:
    """Add a scrape-time gauge (``GaugeReader``); registering one name again replaces it."""
    _collectors[:] = [c for c in _collectors if c.name != reader.name]
    _collectors.append(reader)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Collectors(Collector):
    def collect(self) -> Iterable[Any]:
        for collector in _collectors:
            yield from collector.collect()


def exposition(*, readers: bool = True) -> bytes:
    """The text format of every metric: recorded by every process (multiprocess mode) or by this
    one, plus the scrape-time ``readers``."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Registered())
    if readers:
        registry.register(_Collectors())
    return generate_latest(registry)


def authorized(header: tuple[str, str] | None, token: str) -> bool:
    """Whether an Authorization header (scheme, credentials) carries ``Bearer <token>``."""
    scheme, sent = header or ("", "")
    return scheme == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())


def serve_on_port(sender: Any = None, **kwargs: Any) -> None:
    """Serve this host's metrics on ``METRICS_PORT`` from a Celery worker or beat (connected to
    ``worker_ready`` and ``beat_init``), with the same bearer token as ``/metrics``: a worker in
    a pod of its own shares no ``PROMETHEUS_MULTIPROC_DIR`` with the web processes. Registries
    by state are left to the web's ``/metrics``."""
    from django.conf import settings

    port: int = settings.METRICS_PORT
    if not port:
        return
    server = make_server("", port, _port_app, ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics.serving", extra={"port": port})


def _port_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    from django.conf import settings

    token: str = settings.METRICS_TOKEN
    scheme, _, sent = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    if not token or environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found\n"]
    if not authorized((scheme.lower(), sent), token):
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="metrics"')])
        return [b"Send Authorization: Bearer <METRICS_TOKEN>.\n"]
    start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
    return [exposition(readers=False)]


class _Registered(Collector):
    """This process's own metrics (the default registry), when not in multiprocess mode."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


# --- Celery task outcomes, from its signals (connected by ControlplaneConfig.ready) -------------
_task_started: dict[str, float] = {}


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender or "unknown")


def _on_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    if task_id:
        _task_started[task_id] = time.perf_counter()


def _on_postrun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    started = _task_started.pop(task_id or "", None)
    if started is not None:
        TASK_SECONDS.labels(_task_name(task)).observe(time.perf_counter() - started)


def _outcome(outcome: str) -> Callable[..., None]:
    def record(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
        # task_revoked's sender is the task too; its request also names it.
        TASKS.labels(_task_name(sender or getattr(request, "task", None)), outcome).inc()

    return record


_TASK_OUTCOMES = {
    "task_success": "succeeded",
    "task_failure": "failed",
    "task_retry": "retried",
    "task_revoked": "revoked",
}
_receivers: list[Callable[..., None]] = []  # celery signals hold their receivers weakly


def connect_task_signals() -> None:
    """Count every task that ends, by outcome, and time it (in the process that runs it)."""
    from celery import signals

    if _receivers:
        return
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="metrics.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="metrics.postrun")
    for name, outcome in _TASK_OUTCOMES.items():
        receiver = _outcome(outcome)
        _receivers.append(receiver)
        getattr(signals, name).connect(receiver, weak=False, dispatch_uid=f"metrics.{outcome}")
