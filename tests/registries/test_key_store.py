"""Each process reads the signing keys from the database: the newest key id at most every
``REGISTRY_KEYS_RECHECK_SECONDS`` (one query), the keys only when it changed; an unknown key id
in a refresh token makes it look at once, at most once per ``UNKNOWN_KID_RECHECK_SECONDS``."""

from __future__ import annotations

import pytest

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
    with django_assert_num_queries(2):
        assert replica.public_key("AAAA:BBBB") is None
    with django_assert_num_queries(0):
        assert replica.public_key(None) is None  # no key id: nothing to look up
