"""Each process reads the signing keys from the database: the newest key id at most every
``REGISTRY_KEYS_RECHECK_SECONDS`` (one query), the keys only when it changed; an unknown key id
in a refresh token makes it look at once, at most once per ``UNKNOWN_KID_RECHECK_SECONDS``."""

from __future__ import annotations

import logging
import threading

import pytest
from django.db import connection

from registries.key_files import KeyFolder
from registries.key_store import UNKNOWN_KID_RECHECK_SECONDS, KeyStore, key_store
from registries.services.signing_keys import rotate_keys

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(KeyStore, "clock", clock)
    return clock


@pytest.fixture
def replica(clock: Clock) -> KeyStore:
    """Another process's store: a rotation here (``rotate_keys`` tells this process's
    ``key_store()``) reaches it only through the database."""
    store = KeyStore()
    store.load()
    return store


def rotate(settings) -> str:
    return rotate_keys(KeyFolder(settings.REGISTRY_KEYS_DIR)).current.kid


def test_a_rotation_elsewhere_is_signed_with_once_the_bound_has_passed(
    replica: KeyStore, clock: Clock, settings
) -> None:
    settings.REGISTRY_KEYS_RECHECK_SECONDS = 5.0
    old = replica.load().current.kid

    new = rotate(settings)

    clock.now += 4.9
    assert replica.load().current.kid == old  # within the bound: the keys read before
    clock.now += 0.2
    keys = replica.load()
    assert keys.current.kid == new != old
    assert keys.previous is not None
    assert keys.previous.kid == old


def test_within_the_bound_no_query_then_one_small_query(
    replica: KeyStore, clock: Clock, settings, django_assert_num_queries
) -> None:
    settings.REGISTRY_KEYS_RECHECK_SECONDS = 5.0
    loaded = replica.load()

    with django_assert_num_queries(0):
        for _ in range(100):
            assert replica.load() is loaded
    clock.now += 5.0
    with django_assert_num_queries(1) as queries:  # the newest key id: unchanged
        assert replica.load() is loaded
    assert "LIMIT 1" in queries.captured_queries[0]["sql"]
    with django_assert_num_queries(0):
        assert replica.load() is loaded  # the next bound starts then


def test_a_rotation_by_this_process_is_used_at_once(settings) -> None:
    old = key_store().load().current.kid

    new = rotate(settings)

    assert key_store().load().current.kid == new != old


def test_an_unknown_kid_is_looked_up_at_once_and_at_most_once_a_second(
    replica: KeyStore, clock: Clock, settings, django_assert_num_queries
) -> None:
    settings.REGISTRY_KEYS_RECHECK_SECONDS = 3600.0  # only the unknown key id makes it look
    new = rotate(settings)

    with django_assert_num_queries(2):  # the newest id, then the keys
        assert replica.public_key(new) is not None
    assert replica.load().current.kid == new
    with django_assert_num_queries(0):
        assert replica.public_key("AAAA:BBBB") is None  # within the second: no look
    clock.now += UNKNOWN_KID_RECHECK_SECONDS
    with django_assert_num_queries(1):  # the newest id: unchanged, so no keys read
        assert replica.public_key("AAAA:BBBB") is None
    with django_assert_num_queries(0):
        assert replica.public_key(None) is None  # no key id: nothing to look up


@pytest.mark.django_db(transaction=True)
def test_a_request_that_arrives_while_the_new_kid_is_looked_up_gets_its_key(settings) -> None:
    """Two requests carry the kid of a rotation on another replica. The second is checked
    against the once-a-second bound while the first looks it up: it must wait for that look and
    use its result, not give up (401) because a look is under way."""
    settings.REGISTRY_KEYS_RECHECK_SECONDS = 3600.0
    replica = KeyStore()
    replica.load()
    new = rotate(settings)
    second = threading.current_thread()  # replaced by the second request's thread below
    waiting, first_looked = threading.Event(), threading.Event()
    calls: dict[threading.Thread, int] = {}

    def clock() -> float:
        # The second request's second reading of the clock is taken where it decides whether
        # to look: hold it there until the first request has started its look.
        me = threading.current_thread()
        calls[me] = calls.get(me, 0) + 1
        if me is second and calls[me] == 2:
            waiting.set()
            first_looked.wait(timeout=5)
        return 1000.0

    replica.clock = clock  # type: ignore[method-assign]
    found: dict[str, object] = {}

    def request(name: str) -> None:
        try:
            found[name] = replica.public_key(new)
        finally:
            connection.close()

    second = threading.Thread(target=request, args=("second",))
    first = threading.Thread(target=request, args=("first",))
    second.start()
    assert waiting.wait(timeout=5)
    first.start()
    for _ in range(50):  # until the first request has begun its look (if it can)
        if replica._unknown_checked_at is not None:
            break
        threading.Event().wait(0.01)
    first_looked.set()
    first.join(timeout=10)
    second.join(timeout=10)

    assert found["first"] is not None
    assert found["second"] is not None


@pytest.mark.django_db(transaction=True)
def test_a_failing_recheck_keeps_serving_the_keys_read_and_logs_it(
    replica: KeyStore, clock: Clock, settings, caplog
) -> None:
    """A database blip once the re-check is due: the keys last read, not a 500."""
    settings.REGISTRY_KEYS_RECHECK_SECONDS = 5.0
    loaded = replica.load()
    clock.now += 5.0
    with connection.cursor() as cursor:  # the real database fails the query
        cursor.execute("ALTER TABLE registries_tokensigningkey RENAME TO tokensigningkey_away")
    try:
        with caplog.at_level(logging.WARNING, logger="registries.key_store"):
            assert replica.load() is loaded
            assert replica.public_key(loaded.current.kid) is not None
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE tokensigningkey_away RENAME TO registries_tokensigningkey")
    [record] = [r for r in caplog.records if r.name == "registries.key_store"]
    assert record.getMessage() == "registry.keys.recheck_failed"
    assert record.kid == loaded.current.kid  # type: ignore[attr-defined]
    new = rotate(settings)
    clock.now += 5.0  # the next bound: the database answers again
    assert replica.load().current.kid == new
