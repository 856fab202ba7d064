"""The no-op Celery task: the baseline of the worker-side measures (:mod:`bench.measures.tasks`);
and the floor of a provisioning attempt (P4's third drain).

They exist only under :mod:`bench.settings` (the ``bench`` app's ``tasks`` module, found by the
Celery app's autodiscovery), never in the product's tasks. The no-op does nothing but say that it
ran: it appends the time to a Redis list the bench driver names, so the driver observes it the
way it observes a registry becoming ready (by polling), and times a drain from those timestamps.
The floor (``provision_floor``) sends the statements an attempt cannot do without, by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis
from celery import shared_task
from django.conf import settings

NOOP_TASK = "bench.noop"

_client: redis.Redis | None = None


def redis_client() -> redis.Redis:
    """One client per process (created on first use, so a prefork child makes its own)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client


@shared_task(name=NOOP_TASK)  # type: ignore[untyped-decorator]
def noop(key: str) -> None:
    """Append the time (seconds since the epoch) to the Redis list ``key``."""
    redis_client().rpush(key, repr(time.time()))


FLOOR_TASK = "bench.provision_floor"

#: The statements a provisioning attempt cannot do without, written by hand (see
#: ``provision_floor``): the cluster row locked first (the lock order), then the registry's;
#: the attempt's two events; the registry ``ready``; its URL published.
_FLOOR_LOCK_CLUSTER = (
    "SELECT id FROM clusters_cluster WHERE id = "
    "(SELECT cluster_id FROM registries_registry WHERE id = %s) FOR UPDATE"
)
_FLOOR_LOCK_REGISTRY = (
    "SELECT namespace, attempts, cluster_id FROM registries_registry WHERE id = %s FOR UPDATE"
)
_FLOOR_EVENTS = (
    "INSERT INTO registries_registryevent "
    "(registry_id, from_state, to_state, attempt, duration, message, created_at) VALUES "
    "(%s, 'pending', 'provisioning', %s, '0', '', %s), "
    "(%s, 'provisioning', 'ready', %s, '0', '', %s) RETURNING id"
)
_FLOOR_READY = (
    "UPDATE registries_registry SET state = 'ready', state_changed_at = %s, attempts = %s, "
    "url = %s, ready_at = %s, last_error = '', next_attempt_at = NULL, attempt_deadline = NULL, "
    "failure_transient = false, conditions = %s::jsonb WHERE id = %s"
)
_FLOOR_PUBLISH = (
    "INSERT INTO clusters_agentenvironmentvariable "
    "(cluster_id, name, value, source, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (cluster_id, name) DO UPDATE SET value = EXCLUDED.value, "
    "updated_at = EXCLUDED.updated_at RETURNING id"
)
_FLOOR_CONDITIONS = '[{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "True"}]'


@shared_task(name=FLOOR_TASK)  # type: ignore[untyped-decorator]
def provision_floor(registry_id: str) -> None:
    """The floor of a provisioning attempt (P4's third side): what one attempt must send
    PostgreSQL, in one transaction (``BEGIN``, the cluster and registry locks, the two events,
    the registry's ``UPDATE``, the variable's upsert, ``COMMIT``), as hand-written SQL on the
    task's own database connection, with none of the ORM, signals, metrics or log lines. A
    drain of these against the no-op says what the statements and their round trips alone
    cost: no implementation of the attempt can be cheaper. Bench settings only."""
    from django.conf import settings
    from django.db import connection, transaction

    from registries.models import REGISTRY_URL_VARIABLE

    now = datetime.now(UTC)
    # Django's cursor, so that the task's own connection and transaction are used; psycopg's
    # underneath it, so that no Django wrapper runs per statement.
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        raw.execute(_FLOOR_LOCK_CLUSTER, (registry_id,))
        raw.execute(_FLOOR_LOCK_REGISTRY, (registry_id,))
        namespace, attempts, cluster_id = raw.fetchone()
        url = f"{settings.REGISTRY_PUBLIC_HOST}/{namespace}"
        attempt = attempts + 1
        raw.execute(_FLOOR_EVENTS, (registry_id, attempt, now, registry_id, attempt, now))
        raw.execute(_FLOOR_READY, (now, attempt, url, now, _FLOOR_CONDITIONS, registry_id))
        raw.execute(_FLOOR_PUBLISH, (cluster_id, REGISTRY_URL_VARIABLE, url, "registry", now, now))
