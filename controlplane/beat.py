"""Celery beat without a single point of failure: RedBeat's scheduler, with its lock taken and
kept from beat's own loop (docs/reliability.md, "Beat: one active, standbys ready").

Run two beats or more against the same Redis: the one holding the lock (``redbeat::lock``) is
*active* and sends the schedule; the others are *standbys* and try to take the lock on every
tick (``CELERY_BEAT_MAX_LOOP_INTERVAL``). The active beat renews the lock on every tick; killed,
it stops renewing, the lock expires ``CELERY_REDBEAT_LOCK_TIMEOUT`` seconds later, and a standby
takes it. The entries' last run times live in Redis, so the new active beat sends each entry
when it is next due (at once if overdue), never a second time for an interval already sent.

What this adds to RedBeat's own scheduler:

- RedBeat blocks a standby in ``beat_init`` until it gets the lock: it would stamp no heartbeat,
  and ``manage.py probe beat`` would restart it. Here a standby ticks, stamps its heartbeat as
  ``standby``, and the active beat as ``active`` (controlplane/probes.py).
- Only the beat that takes the lock writes this process's ``CELERY_BEAT_SCHEDULE`` into Redis
  (RedBeat's ``setup_schedule``: changed entries updated, keeping their last run; entries gone
  from the settings deleted). RedBeat does it in every beat at start-up, so a standby still on
  an old release would rewrite the schedule the active beat runs.
- A Redis error costs a tick, not the process (RedBeat lets it end beat). A beat that finds its
  lock gone (expired while it was stalled, or Redis restarted empty) becomes a standby again,
  and takes the lock afresh, writing the schedule again (a restarted Redis lost it).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import beat_init
from redbeat.schedulers import (
    LUA_EXTEND_TO_SCRIPT,
    RedBeatScheduler,
    acquire_distributed_beat_lock,
    get_redis,
)
from redis.exceptions import LockError, RedisError

from controlplane.probes import BEAT, heartbeat

logger = logging.getLogger("celery.beat")

ACTIVE = "active"
STANDBY = "standby"
#: How soon a beat ticks again after Redis failed it (at most its loop interval).
RETRY_SECONDS = 1.0
#: RedBeat's settings (controlplane/beat_settings.py gives them as CELERY_REDBEAT_*).
REDBEAT_SETTINGS = (
    "redbeat_redis_url",
    "redbeat_redis_options",
    "redbeat_key_prefix",
    "redbeat_lock_timeout",
)

# RedBeat takes its lock in beat_init and blocks there; LeaderScheduler takes it from its ticks.
beat_init.disconnect(acquire_distributed_beat_lock)


class LeaderScheduler(RedBeatScheduler):
    """RedBeat's scheduler, active while it holds the lock and a standby otherwise."""

    lock: Any = None

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        # RedBeat looks for its settings among the configuration's keys by their bare names,
        # where Django's settings list them as CELERY_REDBEAT_*. Not found, it would fall back to
        # the broker's URL and transport options (with a deprecation warning) and drop its Redis
        # options (the socket timeouts): they are set again under the names it looks for.
        named = {name: app.conf.get(name) for name in REDBEAT_SETTINGS}
        app.conf.update({name: value for name, value in named.items() if value is not None})
        super().__init__(app, *args, **kwargs)

    @property
    def state(self) -> str:
        return ACTIVE if self.lock is not None else STANDBY

    def setup_schedule(self) -> None:
        """Called by Celery as the scheduler starts: a standby leaves Redis alone."""
        if self.lock is not None:
            super().setup_schedule()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass: as a standby, try to take the lock; as the active beat, renew the lock and
        send what is due (RedBeat's tick). Stamps the heartbeat with the state either way."""
        try:
            if self.lock is None and not self._take_lock():
                delay = float(self.max_interval)
            else:
                delay = float(super().tick(*args, **kwargs))
        except LockError:
            logger.warning("beat: Lost the lock (it expired or Redis lost it); standing by")
            self.lock = None
            delay = 0.0
        except RedisError as exc:
            logger.warning("beat: Redis failed this tick (%s: %s)", type(exc).__name__, exc)
            delay = min(RETRY_SECONDS, float(self.max_interval))
        heartbeat(BEAT, self.state)
        return delay

    def _take_lock(self) -> bool:
        """Take the lock if no beat holds it; then write the settings' schedule into Redis."""
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout)
        # RedBeat's renewal sets the lock's time to live, where redis-py's adds to it.
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        if not lock.acquire(blocking=False):
            return False
        self.lock = lock
        try:
            self.setup_schedule()
        except RedisError:
            self._release()
            raise
        logger.info("beat: Acquired the lock: active, sending the schedule")
        return True

    def _release(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            try:
                if lock.owned():
                    lock.release()
            except RedisError:  # it expires by itself
                logger.warning("beat: Could not release the lock; it expires by itself")

    def close(self) -> None:
        """On a clean stop the lock is released, so that a standby takes over on its next tick
        rather than when the lock expires."""
        if self.lock is not None:
            logger.info("beat: Releasing the lock")
        self._release()
        super().close()
