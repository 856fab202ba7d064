"""controlplane.hotcache keeps at most ``maxsize`` entries, least recently used out first, and
never answers past an entry's deadline."""

from __future__ import annotations

import pytest

from controlplane import hotcache


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    moment = [1000.0]
    monkeypatch.setattr(hotcache, "clock", lambda: moment[0])
    return moment


def test_the_least_recently_used_entry_goes_first(now: list[float], settings) -> None:
    settings.HOT_CACHE_SECONDS = 5
    cache: hotcache.HotCache[str] = hotcache.HotCache("test", maxsize=2)
    since = hotcache.fill_started()
    cache.put("a", "A", since=since)
    cache.put("b", "B", since=since)

    assert cache.get("a") == "A"  # now "b" is the least recently used
    cache.put("c", "C", since=since)

    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    assert len(cache) == 2


def test_expired_entries_make_room_before_live_ones(now: list[float], settings) -> None:
    settings.HOT_CACHE_SECONDS = 5
    cache: hotcache.HotCache[str] = hotcache.HotCache("test", maxsize=2)
    since = hotcache.fill_started()
    cache.put("old", "O", since=since)
    now[0] += 3
    cache.put("live", "L", since=since)
    cache.get("old")  # used last, but expires first
    now[0] += 2.5

    cache.put("new", "N", since=since)

    assert (cache.get("old"), cache.get("live"), cache.get("new")) == (None, "L", "N")


def test_an_entry_is_not_answered_at_its_deadline(now: list[float], settings) -> None:
    settings.HOT_CACHE_SECONDS = 5
    cache: hotcache.HotCache[str] = hotcache.HotCache("test", maxsize=10)
    cache.put("a", "A", since=hotcache.fill_started())

    now[0] = 1004.999
    assert cache.get("a") == "A"
    now[0] = 1005.0
    assert cache.get("a") is None
    assert len(cache) == 0


def test_a_full_cache_looks_for_expired_entries_at_most_once_a_second(
    now: list[float], settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.HOT_CACHE_SECONDS = 5
    cache: hotcache.HotCache[int] = hotcache.HotCache("test", maxsize=3)
    sweeps: list[float] = []
    expire = cache._expire
    monkeypatch.setattr(cache, "_expire", lambda: (sweeps.append(now[0]), expire())[1])
    since = hotcache.fill_started()
    for n in range(10):  # all live: each put over the bound drops the least recently used
        cache.put(n, n, since=since)
        now[0] += 0.25

    assert len(sweeps) == 2  # at 1000.75 (the first overflow) and 1001.75
    assert [cache.get(n) for n in range(10)] == [None] * 7 + [7, 8, 9]
