"""The REST API's two rate-limit counters are counted in one round trip to Redis, under the
cache's keys, with the window's expiry; other cache backends count through the cache API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from django.core.cache import caches

from controlplane.api.ratelimit import Budget, consume


def _budgets() -> tuple[Budget, Budget]:
    key = uuid.uuid4().hex
    return Budget("rest", "RateLimit", key, 5), Budget("rest_user", "RateLimit-User", key, 3, 30)


@pytest.fixture
def redis_calls(monkeypatch) -> dict[str, int]:
    """How many commands went to Redis one by one, and how many pipelines."""
    calls = {"commands": 0, "pipelines": 0}
    command, execute = redis.Redis.execute_command, redis.client.Pipeline.execute

    def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["commands"] += 1
        return command(self, *args, **kwargs)

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["pipelines"] += 1
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", counted_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counted_execute)
    return calls


def test_both_counters_are_one_round_trip_under_the_caches_keys(redis_calls, settings) -> None:
    if not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        pytest.skip("the cache is not Redis here (REDIS_URL unset)")
    organization, token = _budgets()

    first = consume(organization, token, now=1_200_000.0)
    second = consume(organization, token, now=1_200_001.0)

    assert redis_calls == {"commands": 0, "pipelines": 2}
    assert [(u.budget.scope, u.current) for u in first + second] == [
        ("rest", 1), ("rest_user", 1), ("rest", 2), ("rest_user", 2)
    ]  # fmt: skip
    assert [u.reset for u in second] == [59, 29]
    cache = caches["default"]
    for budget, start in ((organization, 1_200_000), (token, 1_200_000)):
        key = f"{settings.API_RATE_LIMIT_KEY_PREFIX}:{budget.scope}:{budget.key}:{start}"
        assert cache.get(key) == 2  # the cache API reads the same counter
        ttl = cache._cache.get_client().ttl(cache.make_and_validate_key(key))
        assert 0 < ttl <= budget.window + 1


def test_another_cache_counts_through_the_cache_api(settings) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rl"}
    }
    organization, token = _budgets()

    counts = [[u.current for u in consume(organization, token)] for _ in range(3)]

    assert counts == [[1, 1], [2, 2], [3, 3]]


def test_where_redis_refuses_the_script_the_commands_count_alike(
    redis_calls, settings, monkeypatch
) -> None:
    if not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        pytest.skip("the cache is not Redis here (REDIS_URL unset)")
    from controlplane.api import ratelimit

    monkeypatch.setattr(ratelimit, "_COUNT_SCRIPT", "return redis.call('NO-SUCH-COMMAND')")
    monkeypatch.setattr(ratelimit, "_script_refused", [])
    organization, token = _budgets()

    first = consume(organization, token, now=1_200_000.0)
    second = consume(organization, token, now=1_200_001.0)

    assert ratelimit._script_refused == [True]
    assert redis_calls == {"commands": 0, "pipelines": 3}  # the refused script's, then two
    assert [u.current for u in first + second] == [1, 1, 2, 2]
