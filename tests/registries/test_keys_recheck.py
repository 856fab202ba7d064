"""The key store looks at ``signing.pem`` at most every ``RECHECK_SECONDS``, not per token: a
rotation by another process is used once that bound has passed, one by this process at once."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from registries.keys import RECHECK_SECONDS, SIGNING, KeyStore


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
def store(tmp_path: Path, clock: Clock) -> KeyStore:
    store = KeyStore(tmp_path / "keys")
    store.init()
    return store


def _rotate(directory: str) -> None:
    KeyStore(directory).rotate()


def rotate_in_another_process(store: KeyStore) -> None:
    child = multiprocessing.get_context("fork").Process(
        target=_rotate, args=(str(store.directory),)
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0


def test_a_rotation_by_another_process_is_used_once_the_bound_has_passed(
    store: KeyStore, clock: Clock
) -> None:
    old = store.load().current.kid

    rotate_in_another_process(store)

    clock.now += RECHECK_SECONDS * 0.9
    assert store.load().current.kid == old  # within the bound: the keys loaded before
    clock.now += RECHECK_SECONDS * 0.2
    keys = store.load()
    assert keys.current.kid != old
    assert keys.previous is not None
    assert keys.previous.kid == old


def test_within_the_bound_the_key_file_is_not_looked_at(
    store: KeyStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = store.load()
    looked: list[str] = []
    real_stat = os.stat

    def stat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        looked.append(str(path))
        return real_stat(path)

    monkeypatch.setattr(os, "stat", stat)
    for _ in range(100):
        assert store.load() is loaded
    assert looked == []

    clock.now += RECHECK_SECONDS
    assert store.load() is loaded  # looked at again, unchanged: not read again
    assert looked == [str(store.path(SIGNING))]
    assert store.load() is loaded
    assert looked == [str(store.path(SIGNING))]  # the next bound starts then


def test_a_rotation_by_another_store_of_this_process_is_used_at_once(
    store: KeyStore, clock: Clock
) -> None:
    old = store.load().current.kid

    rotated = KeyStore(store.directory).rotate()

    assert store.load().current.kid == rotated.current.kid != old


def test_a_missing_signing_key_found_again_by_init_is_used_at_once(
    tmp_path: Path, clock: Clock
) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init()
    old = store.load().current.kid
    store.path(SIGNING).unlink()

    KeyStore(store.directory).init()  # issues a new signing key from the CA

    assert store.load().current.kid != old
