"""The no-op Celery task: the baseline of the worker-side measures (:mod:`bench.measures.tasks`).

It exists only under :mod:`bench.settings` (the ``bench`` app's ``tasks`` module, found by the
Celery app's autodiscovery), never in the product's tasks. It does nothing but say that it ran:
it appends the time to a Redis list the bench driver names, so the driver observes it the way it
observes a registry becoming ready (by polling), and times a drain from those timestamps.
"""

from __future__ import annotations

import time

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
