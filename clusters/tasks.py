"""Celery tasks of the clusters app: thin wrappers that call services."""

from __future__ import annotations

from celery import shared_task

from clusters import services


@shared_task(name="clusters.audit_prune")  # type: ignore[untyped-decorator]
def audit_prune() -> int:
    """Delete the audit events past ``AUDIT_RETENTION_DAYS`` (beat, hourly by default)."""
    return services.audit_prune()
