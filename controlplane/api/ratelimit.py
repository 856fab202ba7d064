"""Rate limits as Buildkite's REST API has them: two budgets per request, one for the
organization (``RateLimit-*`` headers, scope ``rest``) and one for the caller's token
(``RateLimit-User-*``, scope ``rest_user``), counted per fixed window in the cache (Redis in
production, so every web process shares the counts). Every response carries both header sets;
a request over either budget gets 429.

Both counters of a request are counted in one round trip to Redis (one script that runs
``SET NX EX`` and ``INCR`` per counter; the four commands in a pipeline where Redis refuses
scripts), not the four of Django's ``cache.incr`` (``EXISTS`` then ``INCR``, per counter), since
every API request pays it; other cache backends count through the cache
API, with the same keys."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from redis import Redis
from redis.exceptions import ResponseError
from rest_framework import status
from rest_framework.exceptions import APIException

WARNING = "You have exceeded your API rate limit."
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """``limit`` requests per ``window`` seconds for ``key``."""

    scope: str  # "rest" or "rest_user", as Buildkite names them
    header: str  # "RateLimit" or "RateLimit-User"
    key: str
    limit: int
    window: int = 60


@dataclass(frozen=True)
class Usage:
    budget: Budget
    current: int
    reset: int  # seconds until the window ends

    @property
    def exceeded(self) -> bool:
        return self.current > self.budget.limit

    def headers(self) -> dict[str, str]:
        prefix = self.budget.header
        headers = {
            f"{prefix}-Scope": self.budget.scope,
            f"{prefix}-Remaining": str(max(0, self.budget.limit - self.current)),
            f"{prefix}-Limit": str(self.budget.limit),
            f"{prefix}-Reset": str(self.reset),
        }
        if self.current >= self.budget.limit:
            headers[f"{prefix}-Warning"] = WARNING
        return headers


def consume(*budgets: Budget, now: float | None = None) -> list[Usage]:
    """Count one request against each of ``budgets`` and say where each stands; none when the
    counters cannot be reached. Rate limits protect the service, so an unreachable cache lets
    requests through (logged) rather than failing every one of them."""
    now = time.time() if now is None else now
    starts = [int(now // budget.window) * budget.window for budget in budgets]
    keys = [
        f"{settings.API_RATE_LIMIT_KEY_PREFIX}:{budget.scope}:{budget.key}:{start}"
        for budget, start in zip(budgets, starts, strict=True)
    ]
    timeouts = [budget.window + 1 for budget in budgets]
    try:
        counts = _count(caches["default"], keys, timeouts)
    except Exception:
        scopes = ",".join(budget.scope for budget in budgets)
        logger.warning("ratelimit.unavailable", exc_info=True, extra={"scope": scopes})
        return []
    return [
        Usage(budget=budget, current=current, reset=max(1, start + budget.window - int(now)))
        for budget, start, current in zip(budgets, starts, counts, strict=True)
    ]


#: Each counter of ``KEYS`` created at 0 for ``ARGV[i]`` seconds if it does not exist, then
#: incremented: what the pipeline of ``SET NX EX`` and ``INCR`` per counter does, as one command
#: (~50 µs less of the client's CPU a request than four: one to pack, one reply to parse).
_COUNT_SCRIPT = """
local counts = {}
for index, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'EX', ARGV[index], 'NX')
  counts[index] = redis.call('INCR', key)
end
return counts
"""
#: Whether Redis refused the script (scripting disabled for this user, say): the commands then.
_script_refused: list[bool] = []


def _count(cache: BaseCache, keys: list[str], timeouts: Sequence[int]) -> list[int]:
    """Add one to each counter (created for ``timeouts`` seconds by its first request); their
    new values."""
    if isinstance(cache, RedisCache):
        # The cache's own connections and keys (Django stores integers as such, so
        # ``cache.get`` reads these counters too); one round trip for every counter. ``EVAL``
        # with the script's text, never ``EVALSHA``: Redis keeps it compiled by its hash, and
        # nothing need be loaded first or again after a restart.
        redis_keys = [cache.make_and_validate_key(key) for key in keys]
        pipeline = _redis(cache).pipeline(transaction=False)
        if not _script_refused:
            pipeline.eval(_COUNT_SCRIPT, len(redis_keys), *redis_keys, *timeouts)
            try:
                return [int(current) for current in pipeline.execute()[0]]
            except ResponseError:
                logger.warning("ratelimit.script_refused", exc_info=True)
                _script_refused.append(True)
        for redis_key, timeout in zip(redis_keys, timeouts, strict=True):
            pipeline.set(redis_key, 0, ex=timeout, nx=True)
            pipeline.incr(redis_key)
        return [int(current) for current in pipeline.execute()[1::2]]
    return [_incr(cache, key, timeout) for key, timeout in zip(keys, timeouts, strict=True)]


#: One client per cache (Django's makes a new one, with its hundreds of callbacks, per call);
#: clients share the cache's connection pool and are safe across threads.
_clients: weakref.WeakKeyDictionary[RedisCache, Redis] = weakref.WeakKeyDictionary()


def _redis(cache: RedisCache) -> Redis:
    client = _clients.get(cache)
    if client is None:
        client = _clients[cache] = cache._cache.get_client(write=True)
    return client


def _incr(cache: BaseCache, key: str, timeout: int) -> int:
    try:
        return cache.incr(key)  # the common case: the window's counter exists
    except ValueError:  # the window's first request (or another request's, meanwhile)
        return 1 if cache.add(key, 1, timeout=timeout) else cache.incr(key)


class RateLimited(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, usage: Usage) -> None:
        super().__init__(
            f"{WARNING} Please wait {usage.reset} seconds before making more requests."
        )
        self.wait = usage.reset
        self.extra = {
            "scope": usage.budget.scope,
            "limit": usage.budget.limit,
            "current": usage.current,
            "reset": usage.reset,
        }
