"""Applying a registry's retention policy (a run), and the schedule's sweep."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from clusters.interface import Actor, acting_as
from controlplane import metrics
from registries.drivers import DriverError
from registries.inventory import RegistryNotification, Tag
from registries.locks import registry_lock
from registries.models import Registry, State
from registries.retention import (
    RetentionRun,
    RetentionRunState,
    RetentionTrigger,
    policies_for,
    running,
    time_limit,
)
from registries.services.audit import registry_audit
from registries.services.quotas import retention_run_enqueue
from registries.services.retention.plan import PlannedDeletion, TagSeen, retention_plan
from registries.services.tags import (
    RegistryNotReady,
    RegistryTags,
    TagDeletionRefused,
    tag_delete,
)

logger = logging.getLogger("registries.services")

RETENTION_RUN_FINISHED = "REGISTRY_RETENTION_RUN_FINISHED"
SWEEP_BATCH = 500


class RetentionRunning(Exception):
    """Another run of the registry's policy is under way (``run``)."""

    def __init__(self, run: RetentionRun) -> None:
        super().__init__(
            f"A retention run of this registry is already under way (started "
            f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC)."
        )
        self.run = run


def retention_apply(
    registry: Registry,
    *,
    trigger: str,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> RetentionRun:
    """Apply the registry's policy now and record the run: each planned group deleted through
    ``tag_delete`` (its audit row), unless the inventory may be behind (``_changed``) or the
    registry's tags differ from the plan (``expected_digest``); a group that fails is recorded
    in ``errors`` and the run goes on; the run stops at its time limit. Raises
    ``RegistryNotReady`` (the registry is not ready) or ``RetentionRunning`` (another run is
    under way); nothing is written then."""
    with acting_as(actor) if actor is not None else nullcontext():
        run = _run_start(registry, trigger)
        deleted: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        failed = False
        try:
            plan = retention_plan(registry, now=now)
            run.policy = {**(plan.policy or {}), "source": plan.source}
            deadline = run.started_at + timedelta(seconds=time_limit())
            registry_tags = RegistryTags()  # each repository listed once a run
            for done_count, deletion in enumerate(plan.deletions):
                if timezone.now() >= deadline:
                    left = len(plan.deletions) - done_count
                    errors.append(_stopped(left))
                    failed = True
                    break
                problem = _changed(registry, deletion)
                if problem:
                    errors.append(_error(deletion, problem))
                    continue
                try:
                    done = tag_delete(
                        registry=registry,
                        repository=deletion.repository,
                        tag=deletion.tags[0],
                        include_shared_digest=True,
                        expected_digest=deletion.digest,
                        registry_tags=registry_tags,
                    )
                except RegistryNotReady as exc:
                    errors.append(_error(deletion, str(exc)))
                    failed = True
                    break
                except (TagDeletionRefused, DriverError) as exc:
                    errors.append(_error(deletion, str(exc)))
                    continue
                deleted.append({**deletion.as_json(), "tags": done.tags, "digest": done.digest})
        except Exception as exc:
            errors.append({"repository": "", "tag": "", "error": f"{type(exc).__name__}: {exc}"})
            _run_finish(run, deleted, errors, failed=True)
            raise
        _run_finish(run, deleted, errors, failed=failed)
    return run


def _stopped(left: int) -> dict[str, Any]:
    """A run stops at its time limit, in a worker or in a web request alike, so that it never
    outlives the moment ``retention.running`` stops counting it (and another may start)."""
    return {"repository": "", "tag": "", "error": (
        f"stopped at the time limit ({time_limit()} s, REGISTRY_RETENTION_TIME_LIMIT_SECONDS): "
        f"{left} planned deletion{'' if left == 1 else 's'} left to the next run"
    )}  # fmt: skip


def _error(deletion: PlannedDeletion, error: str) -> dict[str, Any]:
    return {"repository": deletion.repository, "tag": ", ".join(deletion.tags), "error": error}


def _changed(registry: Registry, deletion: PlannedDeletion) -> str:
    """Why the group may no longer be deleted ("" if it may): events of its repository not yet
    applied to the inventory (it may be behind the registry there; pulls move no tag, and
    another repository's events change nothing of this one, so neither holds it back), or a tag
    of it pushed, pulled, moved or added since the plan. (``tag_delete`` then checks the
    registry itself.)"""
    name = f"{registry.namespace}/{deletion.repository}"
    pending = RegistryNotification.objects.filter(
        registry=registry, applied_at__isnull=True, repository=name
    ).exclude(action="pull")
    if pending.exists():
        return "skipped: the registry has events not yet applied to the inventory"
    now = {
        TagSeen(*row)
        for row in Tag.objects.filter(
            Q(digest=deletion.digest) | Q(name__in=deletion.tags),
            repository__registry=registry,
            repository__name=name,
        ).values_list("name", "digest", "pushed_at", "last_pulled_at", "bytes")
    }
    if now == set(deletion.seen):
        return ""
    return "skipped: pushed, pulled or moved since the plan"


def _run_start(registry: Registry, trigger: str) -> RetentionRun:
    """Record a run, unless another is under way (``retention.running``; one that outlived the
    task's time limit is marked failed: its worker is gone). Under the registry's row lock, so
    two cannot start."""
    now = timezone.now()
    with transaction.atomic():
        locked = registry_lock(registry.pk)
        if locked is None or locked.state != State.READY:
            state = "gone" if locked is None else locked.state
            raise RegistryNotReady(f"The registry is {state}: its policy runs only while ready.")
        current = running(locked.pk, now=now)
        if current is not None:
            raise RetentionRunning(current)
        RetentionRun.objects.filter(registry=locked, state=RetentionRunState.RUNNING).update(
            state=RetentionRunState.FAILED,
            finished_at=now,
            errors=[{"repository": "", "tag": "", "error": "did not finish in time"}],
        )
        return RetentionRun.objects.create(
            registry=locked,
            trigger=RetentionTrigger(trigger),
            usage_bytes_before=locked.usage_bytes,
            started_at=now,
        )


def _run_finish(
    run: RetentionRun, deleted: list[dict[str, Any]], errors: list[dict[str, Any]], *, failed: bool
) -> None:
    """The run's outcome, its audit row and (once committed) the deleted tags' count."""
    with transaction.atomic():
        locked = registry_lock(run.registry_id)
        if locked is None:  # deleted meanwhile, and its runs with it
            return
        run.deleted, run.errors = deleted, errors
        run.state = RetentionRunState.FAILED if failed else RetentionRunState.SUCCEEDED
        run.usage_bytes_after = locked.usage_bytes
        run.finished_at = timezone.now()
        run.save()
        tags = sum(len(entry["tags"]) for entry in deleted)
        registry_audit(
            locked,
            RETENTION_RUN_FINISHED,
            {
                "run": str(run.pk),
                "trigger": run.trigger,
                "state": run.state,
                "tags": tags,
                "manifests": len(deleted),
                "errors": len(errors),
                "bytes": [run.usage_bytes_before, run.usage_bytes_after],
            },
        )
        counter = metrics.RETENTION_DELETED_TAGS.labels(run.trigger)
        transaction.on_commit(lambda: counter.inc(tags))
    logger.info(
        "registry.retention.finished",
        extra={"registry_id": str(run.registry_id), "run_id": str(run.pk), "state": run.state,
               "tags": tags, "errors": len(errors)},
    )  # fmt: skip


def retention_sweep(*, batch: int = SWEEP_BATCH) -> int:
    """The schedule's turn (Celery beat): enqueue a run for every ready registry whose policy
    (its cluster's override, else its organization's default) is enabled, reading their ids
    ``batch`` at a time. Returns how many."""
    count = 0
    for registry_id in _enabled_registry_ids(batch):
        retention_run_enqueue(str(registry_id), RetentionTrigger.SCHEDULE)
        count += 1
    return count


def _enabled_registry_ids(batch: int) -> Iterable[Any]:
    """Ready registries whose policy in force (``retention.policies_for``) is enabled."""
    rows = (
        Registry.objects.filter(state=State.READY, cluster__isnull=False)
        .order_by("pk")
        .values_list("pk", "cluster_id", "cluster__organization_id")
        .iterator(chunk_size=batch)
    )
    while chunk := list(islice(rows, batch)):
        policies = policies_for((row[1], row[2]) for row in chunk)
        for registry_id, cluster_id, _ in chunk:
            policy, _ = policies[cluster_id]
            if policy is not None and policy.enabled:
                yield registry_id
