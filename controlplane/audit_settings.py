"""Settings of the audit log's retention (docs/audit.md), star-imported by
``controlplane/settings.py`` (kept apart so that it stays short)."""

from __future__ import annotations

from controlplane.env import env_float, env_int

__all__ = [
    "AUDIT_PRUNE_BATCH",
    "AUDIT_PRUNE_INTERVAL_SECONDS",
    "AUDIT_RETENTION_DAYS",
]

#: Audit events older than this many days are deleted by ``clusters.audit_prune``; 0 keeps
#: them forever.
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 365, minimum=0)
#: How many rows each of the prune's transactions deletes (short locks on a long log).
AUDIT_PRUNE_BATCH = env_int("AUDIT_PRUNE_BATCH", 1000, minimum=1)
AUDIT_PRUNE_INTERVAL_SECONDS = env_float("AUDIT_PRUNE_INTERVAL_SECONDS", 3600.0)
