"""The reconciler: a level-triggered pass that repairs whatever drifted (Celery beat runs it as
``registries.reconcile`` every ``REGISTRY_RECONCILE_INTERVAL_SECONDS``).

It does not react to events, which can be lost: each pass compares what should exist with what
is recorded and what the registry answers, and repairs the difference.

1. Every cluster with a hosted queue has a registry: a missing one is created (and provisioned).
2. Every registry owed an attempt gets one: ``pending`` ones whose message was lost,
   ``provisioning`` and ``deprovisioning`` ones whose attempt's lease expired (a dead worker, a
   database outage), lost retries, and final sweeps that are due are enqueued again.
3. Every ready registry's URL reaches its cluster's jobs: a missing or stale
   ``BUILDKITE_HOSTED_REGISTRY_URL`` is published again.
4. A registry that failed because the registry did not answer is retried once it answers again.
5. Job credentials that expired more than a day ago are deleted (housekeeping, not a repair: the
   report counts them apart).

Steps 2, 4 and 5 read only the rows that are due, through partial indexes. Steps 1 and 3 look
for drift that leaves no due time behind, so they sweep: each pass looks at the next
``REGISTRY_RECONCILE_SWEEP`` clusters by id (a ``KeyWindow``), and at those clusters' queues,
registries and variables only, and leaves where it stopped on its lease for the next pass; with
at most that many clusters, every pass looks at all of them. So a pass costs the same with 1,000
registries or 100,000.

Each pass holds the ``reconciler`` lease (a row in ``registries_lease``, see ``lease.py``), so
two Celery beats, or a pass that outlives its interval, never run two passes at once: the second
finds the lease held and does nothing. Every repair is also safe on its own (rows are locked and
leased), so the lease keeps passes from doing the same work twice rather than from doing harm.
The repairs themselves are in ``repairs.py``; this module is the pass.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from controlplane import metrics
from registries.backends import backend_get
from registries.reconciler.lease import (
    lease_acquire,
    lease_holder,
    lease_progress,
    lease_release,
    this_process,
)
from registries.reconciler.repairs import (
    backend_rehosted,
    job_credentials_purge,
    registries_claim_due,
    registry_rehost,
    registry_republish,
    registry_retry_failed,
    rehost_settle,
)
from registries.selectors import (
    KeyWindow,
    backends_rehosting,
    clusters_owed_a_registry,
    clusters_window,
    registries_failed_transiently,
    registries_off_host,
    registries_unpublished,
)
from registries.services import backend_check, registry_create_for_cluster

__all__ = [
    "RECONCILER_LEASE",
    "ReconcileReport",
    "lease_acquire",
    "lease_holder",
    "lease_release",
    "registries_claim_due",
    "registries_reconcile",
    "registry_republish",
    "this_process",
]

logger = logging.getLogger(__name__)

RECONCILER_LEASE = "reconciler"
#: Where the sweeps stopped, in the reconciler lease's ``progress``: the last cluster id read.
SWEPT_THROUGH = "clusters_swept_through"


@dataclass
class ReconcileReport:
    """What one pass found and did (registry and cluster ids)."""

    skipped_because_held_by: str = ""
    created: list[str] = field(default_factory=list)
    enqueued: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    #: Expired job credentials deleted (not counted in ``repairs``: nothing had drifted).
    job_credentials_purged: int = 0

    @property
    def repairs(self) -> int:
        return len(self.created) + len(self.enqueued) + len(self.republished) + len(self.retried)


def registries_reconcile(*, holder: str | None = None) -> ReconcileReport:
    """Run one reconcile pass, unless another holds the lease."""
    holder = holder or this_process()
    elapsed = metrics.stopwatch()
    # No pass outlives the task's hard time limit; then the lease frees itself.
    ttl = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    if not lease_acquire(RECONCILER_LEASE, holder=holder, ttl=ttl):
        report = ReconcileReport(skipped_because_held_by=lease_holder(RECONCILER_LEASE))
        logger.info("reconcile.skipped", extra={"held_by": report.skipped_because_held_by})
        metrics.RECONCILE_SECONDS.labels("skipped").observe(elapsed())
        return report
    report = ReconcileReport()
    progress = None  # a pass that fails sweeps the same windows again next time
    try:
        window = clusters_window(
            after=lease_progress(RECONCILER_LEASE).get(SWEPT_THROUGH),
            size=settings.REGISTRY_RECONCILE_SWEEP,
        )
        stopped = _create_missing(report, window)
        with _one_repair("enqueue_due"):
            report.enqueued = [str(r.pk) for r in registries_claim_due()]
        stopped += _republish(report, window)
        _rehost(report)
        _retry_failed(report)
        with _one_repair("purge_job_credentials"):
            report.job_credentials_purged = job_credentials_purge()
        # The next window starts after this one, or where a repair stopped at the batch limit.
        progress = {SWEPT_THROUGH: min(stopped) if stopped else window.next_after}
    finally:
        lease_release(RECONCILER_LEASE, holder=holder, progress=progress)
    metrics.RECONCILE_SECONDS.labels("ran").observe(elapsed())
    for repair in ("created", "enqueued", "republished", "retried"):
        if repaired := getattr(report, repair):
            metrics.RECONCILE_REPAIRS.labels(repair).inc(len(repaired))
    log = logger.warning if report.repairs else logger.info
    log(
        "reconcile.pass",
        extra={
            "registries_created": len(report.created),
            "registries_enqueued": len(report.enqueued),
            "registries_republished": len(report.republished),
            "registries_retried": len(report.retried),
            "job_credentials_purged": report.job_credentials_purged,
        },
    )
    return report


def _create_missing(report: ReconcileReport, window: KeyWindow) -> list[str]:
    """Create the registries of ``window``'s clusters owed one, at most
    ``REGISTRY_RECONCILE_BATCH``; returns the last cluster id repaired if it stopped there."""
    owed = list(clusters_owed_a_registry(window)[: settings.REGISTRY_RECONCILE_BATCH])
    for cluster in owed:
        with _one_repair("create_registry", cluster_id=str(cluster.pk)):
            registry = registry_create_for_cluster(cluster=cluster)
            report.created.append(str(registry.pk))
    return _stopped_at([cluster.pk for cluster in owed])


def _republish(report: ReconcileReport, window: KeyWindow) -> list[str]:
    """Publish again the URLs of ``window``'s ready registries that their jobs do not receive,
    at most ``REGISTRY_RECONCILE_BATCH``; returns the last cluster id repaired if it stopped
    there."""
    unpublished = list(registries_unpublished(window)[: settings.REGISTRY_RECONCILE_BATCH])
    for registry in unpublished:
        # A variable that cannot be published (another source owns the name) is reported on
        # the registry's Synced condition.
        with _one_repair("republish", registry_id=str(registry.pk)):
            # Looked up in this module at call time, so a test can replace it here.
            if registry_republish(registry=registry):
                report.republished.append(str(registry.pk))
    return _stopped_at([registry.cluster_id for registry in unpublished])


def _rehost(report: ReconcileReport) -> None:
    """Move the ready registries of each backend whose public host changed to it, at most
    ``REGISTRY_RECONCILE_BATCH`` a backend and pass; a backend none is left off is done once
    ``rehost_settle`` has passed since the change (a stale copy or an attempt in flight may
    still make a registry ready on the old host until then)."""
    batch = settings.REGISTRY_RECONCILE_BATCH
    settled_before = timezone.now() - rehost_settle()
    for backend_id, host, changed_at in backends_rehosting():
        stale = list(registries_off_host(backend_id, host)[:batch])
        for registry in stale:
            with _one_repair("rehost", registry_id=str(registry.pk)):
                if registry_rehost(registry=registry, public_host=host):
                    report.republished.append(str(registry.pk))
        settled = changed_at <= settled_before
        if settled and len(stale) < batch and not registries_off_host(backend_id, host).exists():
            backend_rehosted(backend_id=backend_id, changed_at=changed_at)


def _stopped_at(cluster_ids: list[uuid.UUID | None]) -> list[str]:
    """``[the last id]`` of a batch of repairs (in cluster id order) that the batch limit
    stopped, so that the next pass goes on from there; ``[]`` if it repaired all."""
    if len(cluster_ids) < settings.REGISTRY_RECONCILE_BATCH:
        return []
    return [str(cluster_ids[-1])]


def _retry_failed(report: ReconcileReport) -> None:
    before = timezone.now() - timedelta(seconds=settings.REGISTRY_FAILED_RETRY_AFTER_SECONDS)
    failed = registries_failed_transiently(before=before)
    # One check of each registry backend with failed registries, before reading them: while
    # it does not answer, their rows are not read at all.
    for driver, backend_id in failed.order_by().values_list("driver", "backend_id").distinct():
        backend = backend_get(backend_id) if backend_id is not None else None
        answering, seen = backend_check(backend, driver)
        if not answering:
            logger.info("reconcile.registry_still_down", extra={"error": seen})
            continue
        same = failed.filter(driver=driver, backend_id=backend_id)
        for registry in same[: settings.REGISTRY_RECONCILE_BATCH]:
            with _one_repair("retry", registry_id=str(registry.pk)):
                if registry_retry_failed(registry=registry):
                    report.retried.append(str(registry.pk))


@contextmanager
def _one_repair(what: str, **ids: str) -> Iterator[None]:
    """One repair that fails (a row deleted meanwhile, a bug) is logged and skipped: the rest of
    the pass goes on, and the next pass tries it again."""
    try:
        yield
    except Exception:
        logger.exception("reconcile.repair_failed", extra={"repair": what, **ids})
