"""Settings of retention policies and of garbage collection in a maintenance window
(docs/retention.md), star-imported by ``controlplane/settings.py`` (kept apart so that it stays
short). ``CLEANUP_BEAT`` and ``CLEANUP_TASK_ROUTES`` are merged into Celery's there."""

from __future__ import annotations

from controlplane.env import env, env_bool, env_float, env_int

__all__ = [
    "CLEANUP_BEAT",
    "CLEANUP_ENUM_NAME_OVERRIDES",
    "CLEANUP_TASK_ROUTES",
    "MAINTENANCE_QUEUE",
    "REGISTRY_DRAIN_TIMEOUT",
    "REGISTRY_GC_BINARY",
    "REGISTRY_GC_CONFIG",
    "REGISTRY_GC_DELETE_UNTAGGED",
    "REGISTRY_GC_DRAIN_SECONDS",
    "REGISTRY_GC_INTERVAL_SECONDS",
    "REGISTRY_GC_REPLICA_FORGET_SECONDS",
    "REGISTRY_GC_REPLICA_POLL_SECONDS",
    "REGISTRY_GC_REPLICA_STALE_SECONDS",
    "REGISTRY_GC_SWITCH_TIMEOUT_SECONDS",
    "REGISTRY_GC_TIME_LIMIT_SECONDS",
    "REGISTRY_RETENTION_INTERVAL_SECONDS",
    "REGISTRY_RETENTION_TIME_LIMIT_SECONDS",
]

#: Every this many seconds (Celery beat) each ready registry with an enabled policy is cleaned.
REGISTRY_RETENTION_INTERVAL_SECONDS = env_float("REGISTRY_RETENTION_INTERVAL_SECONDS", 3600.0)
#: At most this long for one registry's run (its Celery time limit); a run still marked running
#: after it is taken for dead, and the next one starts.
REGISTRY_RETENTION_TIME_LIMIT_SECONDS = env_int(
    "REGISTRY_RETENTION_TIME_LIMIT_SECONDS", 1800, minimum=60
)

#: Every this many seconds each backend's garbage is collected in a maintenance window; 0: only
#: on demand (console, ``manage.py registry_gc``, the operators' API).
REGISTRY_GC_INTERVAL_SECONDS = env_float("REGISTRY_GC_INTERVAL_SECONDS", 7 * 86400.0)
#: The registry configuration the default backend's ``garbage-collect`` runs on (the file the
#: replicas run on, or one with the same storage section), as the maintenance worker sees it.
REGISTRY_GC_CONFIG = env("REGISTRY_GC_CONFIG", "")
#: Distribution's binary (Debian's ``docker-registry``; ``registry`` in the upstream image).
REGISTRY_GC_BINARY = env("REGISTRY_GC_BINARY", "docker-registry")
#: Run ``garbage-collect --delete-untagged`` where it is safe; false: never
#: (docs/retention.md#untagged-manifests).
REGISTRY_GC_DELETE_UNTAGGED = env_bool("REGISTRY_GC_DELETE_UNTAGGED", True)
#: Pushes are refused this long before the replicas go read-only, so uploads in flight finish.
REGISTRY_GC_DRAIN_SECONDS = env_float("REGISTRY_GC_DRAIN_SECONDS", 60.0)
#: ``http.draintimeout`` of the generated registry configuration (a Go duration): on SIGTERM, as
#: its runner switches it to or from read-only, a replica lets requests in flight finish this
#: long. Shorter than REGISTRY_GC_SWITCH_TIMEOUT_SECONDS (``registry_config`` refuses otherwise).
REGISTRY_DRAIN_TIMEOUT = env("REGISTRY_DRAIN_TIMEOUT", "30s")
#: How long every replica has to report the mode it was asked for; past it the window ends
#: (read-write again) and the collection fails, saying which replica did not answer.
REGISTRY_GC_SWITCH_TIMEOUT_SECONDS = env_float("REGISTRY_GC_SWITCH_TIMEOUT_SECONDS", 120.0)
#: How often a replica's runner asks for its mode (the endpoint tells it).
REGISTRY_GC_REPLICA_POLL_SECONDS = env_float("REGISTRY_GC_REPLICA_POLL_SECONDS", 2.0)
#: A replica not heard from for this long is gone: no longer waited for.
REGISTRY_GC_REPLICA_STALE_SECONDS = env_float("REGISTRY_GC_REPLICA_STALE_SECONDS", 30.0)
#: A replica not heard from for this long (gone without deregistering: a crashed runner, a deleted
#: pod) is forgotten: its row is deleted (until then it blocks every window, fail closed).
REGISTRY_GC_REPLICA_FORGET_SECONDS = env_float("REGISTRY_GC_REPLICA_FORGET_SECONDS", 86400.0)
#: At most this long for a whole collection (its Celery time limit).
REGISTRY_GC_TIME_LIMIT_SECONDS = env_int("REGISTRY_GC_TIME_LIMIT_SECONDS", 3 * 3600, minimum=60)

#: Garbage collections run on a queue of their own: a worker there needs the registry's binary and
#: its storage (deploy/README.md); every other worker leaves them alone.
MAINTENANCE_QUEUE = "maintenance"
CLEANUP_TASK_ROUTES = {"registries.garbage_collection": {"queue": MAINTENANCE_QUEUE}}
CLEANUP_BEAT = (
    ("registries.retention_sweep", REGISTRY_RETENTION_INTERVAL_SECONDS),
    ("registries.garbage_collection_schedule", REGISTRY_GC_INTERVAL_SECONDS or 3600.0),
    # A window whose worker died keeps the replicas read-only until this ends it: every minute.
    ("registries.garbage_collection_repair", 60.0),
)
#: The OpenAPI schema's names of the collections' state and trigger (retention runs have fields of
#: the same names): merged into drf-spectacular's ENUM_NAME_OVERRIDES.
CLEANUP_ENUM_NAME_OVERRIDES = {
    "GarbageCollectionStateEnum": "registries.maintenance.CollectionState",
    "GarbageCollectionTriggerEnum": "registries.maintenance.CollectionTrigger",
}
