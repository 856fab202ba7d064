"""Which scheduler Celery beat runs, and its lock's timing (docs/reliability.md, "Beat: one
active, standbys ready"); ``controlplane/settings.py`` adds what :func:`beat_settings` returns.

Where the broker is Redis (production, CI), beat runs ``controlplane.beat:LeaderScheduler``
(RedBeat): several beats may run, one holds a lock in Redis and sends the schedule, the others
stand by and take the lock once it expires. The embedded default (``make run``: a filesystem
broker, no Redis) has nowhere to share a lock or the schedule's state, so it keeps Celery's
file-backed scheduler and one beat, as before.

Kept out of ``settings.py`` (which stays short) and free of Celery imports, so that the switch
is a plain function its tests call with either broker.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from controlplane.env import env_float, env_int

#: The scheduler of a single beat with a schedule file (the embedded default).
FILE_SCHEDULER = "controlplane.probes:HeartbeatScheduler"
#: The scheduler of an active beat and its standbys, sharing a lock and the schedule in Redis.
REDIS_SCHEDULER = "controlplane.beat:LeaderScheduler"
#: Where RedBeat keeps its lock, schedule and entries in the broker's Redis database.
KEY_PREFIX = "redbeat:"
#: The broker URLs RedBeat's Redis client takes (kombu's redis+socket:// and sentinel:// are not).
REDIS_SCHEMES = ("redis://", "rediss://")
#: How long a call to Redis from beat may take before it counts as failed: an unanswered call
#: must not hold the active beat past its lock (which another beat would then take).
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0


def uses_redis(broker_url: str) -> bool:
    return broker_url.startswith(REDIS_SCHEMES)


def beat_settings(broker_url: str) -> dict[str, object]:
    """The ``CELERY_*`` settings of beat for ``broker_url``.

    ``CELERY_BEAT_LOOP_SECONDS`` (5) is the longest beat sleeps between two ticks: how often the
    active beat renews its lock and a standby tries to take it. ``CELERY_BEAT_LOCK_TIMEOUT_SECONDS``
    (25) is how long the lock outlives the last renewal: a beat killed outright is replaced at
    most timeout + loop (30 s) later, within one interval of the shortest schedule (the
    reconciler, 30 s), while a tick may run late by four loops before a standby takes over.
    """
    if not uses_redis(broker_url):
        return {"CELERY_BEAT_SCHEDULER": FILE_SCHEDULER}
    loop = env_float("CELERY_BEAT_LOOP_SECONDS", 5.0)
    # Whole seconds: RedBeat renews the lock for int(timeout).
    lock_timeout = env_int("CELERY_BEAT_LOCK_TIMEOUT_SECONDS", 25)
    if loop <= 0 or lock_timeout <= loop:
        raise ImproperlyConfigured(
            f"CELERY_BEAT_LOCK_TIMEOUT_SECONDS ({lock_timeout:g}) must exceed "
            f"CELERY_BEAT_LOOP_SECONDS ({loop:g}), which must be above 0: the active beat renews "
            "its lock once a loop, and would lose it between two renewals."
        )
    return {
        "CELERY_BEAT_SCHEDULER": REDIS_SCHEDULER,
        "CELERY_BEAT_MAX_LOOP_INTERVAL": loop,
        "CELERY_REDBEAT_REDIS_URL": broker_url,
        # RedBeat would otherwise borrow the broker's transport options (visibility_timeout),
        # which are not the Redis client's.
        "CELERY_REDBEAT_REDIS_OPTIONS": {
            "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
        },
        "CELERY_REDBEAT_KEY_PREFIX": KEY_PREFIX,
        "CELERY_REDBEAT_LOCK_TIMEOUT": lock_timeout,
    }


def takeover_seconds(loop: float, lock_timeout: float) -> float:
    """The longest a standby takes to send the schedule after the active beat is killed: the
    lock expires ``lock_timeout`` after its last renewal, and a standby tries once a loop."""
    return lock_timeout + loop


def check_beat_settings(
    app_configs: object, *, settings: Any = None, **kwargs: object
) -> list[checks.CheckMessage]:
    """Warns when a killed beat would not be replaced within two intervals of the shortest
    periodic task (the promise of docs/reliability.md), so that a shorter interval set without
    a shorter lock does not silently break it. ``settings``: Django's unless given."""
    if settings is None:
        from django.conf import settings
    if getattr(settings, "CELERY_BEAT_SCHEDULER", None) != REDIS_SCHEDULER:
        return []
    takeover = takeover_seconds(
        float(settings.CELERY_BEAT_MAX_LOOP_INTERVAL), float(settings.CELERY_REDBEAT_LOCK_TIMEOUT)
    )
    schedule: dict[str, dict[str, object]] = settings.CELERY_BEAT_SCHEDULE
    intervals = [
        float(entry["schedule"])
        for entry in schedule.values()
        if isinstance(entry["schedule"], int | float)
    ]
    if not intervals or takeover <= 2 * min(intervals):
        return []
    return [
        checks.Warning(
            f"A standby beat takes over up to {takeover:g} s after the active one dies, more "
            f"than two intervals of the shortest periodic task ({min(intervals):g} s).",
            hint="Lower CELERY_BEAT_LOCK_TIMEOUT_SECONDS (and CELERY_BEAT_LOOP_SECONDS).",
            id="controlplane.W001",
        )
    ]
