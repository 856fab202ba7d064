"""The registry replicas' modes during a maintenance window (owner: issue 18's runner work).

Each replica's runner (``scripts/run-registry``) asks ``GET /registry/maintenance`` every
``REGISTRY_GC_REPLICA_POLL_SECONDS`` which mode to be in, telling the mode it is in; the answer
comes from the backend's active ``GarbageCollection`` (``READ_ONLY_STATES``: read-only).
"""

from __future__ import annotations

from registries.backends import Backend
from registries.maintenance import RegistryReplica


def replica_report(backend: Backend, *, name: str, mode: str) -> str:
    """Record that replica ``name`` of ``backend`` is in ``mode`` now, and answer the mode it
    should be in."""
    raise NotImplementedError


def replicas_wanted_mode(backend_id: int) -> str:
    """``ReplicaMode.READ_ONLY`` while the backend's active collection is in a read-only state,
    else ``ReplicaMode.READ_WRITE``."""
    raise NotImplementedError


def replicas_live(backend_id: int) -> list[RegistryReplica]:
    """The backend's replicas heard from within ``REGISTRY_GC_REPLICA_STALE_SECONDS``."""
    raise NotImplementedError
