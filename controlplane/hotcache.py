"""Per-process caches for the hot read paths: the agent environment, the token endpoint's
principal, the webhook's secrets. A warm answer reads no database.

- **Bound**: an entry lives ``HOT_CACHE_SECONDS`` at most (a setting, a few seconds), and never
  past the ``expires_at`` of the credential it was made from. That bound is what every other
  process and host gets: a credential revoked anywhere stops working everywhere within it.
- **Same process**: ``invalidate(*tags)`` drops at once every entry carrying one of the tags, in
  every cache of the process, and again when the surrounding transaction commits (so that a
  request reading between the write and the commit cannot keep the old answer). Model signals
  call it (``clusters.apps``, ``registries.apps``), and writes that use ``QuerySet.update()``
  call it themselves.
- **Fills never race an invalidation**: take ``fill_started()`` before reading the database and
  pass it to ``put``; an entry whose tags were invalidated after that moment is born dead.
- **Keys** are derived from a hash of the secret (``controlplane.credentials.secret_hash``),
  never the secret itself, so a memory dump of the cache holds no usable credential.
- Only committed state is cached: ``put`` keeps nothing read inside a transaction (an atomic
  block), which may still roll back. The hot paths read outside any; so do tests that exercise
  the caches (``django_db(transaction=True)``): a test inside a transaction reads the database.
- Misses are never cached (a token created in another process must work at once), and the
  caller decides what is not worth caching (``put`` is simply not called).

Each cache is an ``OrderedDict`` (least recently used first out, each entry with its own deadline:
what ``cachetools.TLRUCache`` does, for fewer Python calls a read; ``HotCache``) behind a lock,
so that threaded servers (gunicorn ``gthread``) share them safely.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save

V = TypeVar("V")

# The invalidation epoch, shared by every cache of the process: each invalidation moves it on.
_epoch_lock = threading.Lock()
_epoch = 0
#: The epoch at which each tag was last invalidated.
_invalidated: dict[str, int] = {}
#: Entries born before this epoch are dead (``clear()``).
_floor = 0
#: Past this many remembered tags, everything is cleared and the memory given back.
_MAX_REMEMBERED_TAGS = 100_000


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    tags: tuple[str, ...]
    born: int  # the epoch when the fill started
    deadline: float  # on clock()


#: The caches' clock (seconds, monotonic); tests move it to see entries expire.
clock: Callable[[], float] = time.monotonic


def _now() -> float:
    return clock()


def _alive(entry: _Entry[Any]) -> bool:
    if entry.born < _floor:
        return False
    return all(_invalidated.get(tag, 0) <= entry.born for tag in entry.tags)


def row_tag(model: Any, pk: object) -> str:
    """The tag of what was read from one row of ``model`` (a model class):
    ``clusters.cluster:<id>``."""
    return f"{model._meta.label_lower}:{pk}"


def secret_tag(hashed: str) -> str:
    """The tag of what was read for one secret (by its hash): a row created later with the same
    hash (tests reuse secrets) must not find an answer made for an older one."""
    return f"secret:{hashed}"


def invalidate_on_change(
    model: type[Model],
    tags: Callable[[Any], Iterable[str]],
    *,
    name: str,
    deletes: bool = True,
) -> None:
    """Invalidate ``tags(instance)`` whenever an instance of ``model`` is saved, or deleted
    unless ``deletes`` is False (connected once, under ``name``). Writes with
    ``QuerySet.update()`` send no signal: they call ``invalidate`` themselves.

    A ``post_delete`` receiver costs a query on every bulk delete of the model, which Django then
    reads row by row to signal each (``deletes=False`` for a table purged in bulk whose deleted
    rows no cache can still hold)."""

    def receiver(sender: type[Model], instance: Model, **kwargs: Any) -> None:
        invalidate(*tags(instance))

    for signal in (post_save, post_delete) if deletes else (post_save,):
        signal.connect(receiver, sender=model, weak=False, dispatch_uid=f"hotcache.{name}")


def fill_started() -> int:
    """The moment a fill starts, to pass to ``HotCache.put``: take it before the database read."""
    return _epoch


def invalidate(*tags: str) -> None:
    """Drop every entry carrying one of ``tags``, in every cache, now and (inside a transaction)
    again once it commits."""
    _invalidate(tags)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _invalidate(tags))


def _invalidate(tags: Iterable[str]) -> None:
    global _epoch, _floor
    with _epoch_lock:
        _epoch += 1
        for tag in tags:
            _invalidated[tag] = _epoch
        if len(_invalidated) > _MAX_REMEMBERED_TAGS:
            _invalidated.clear()
            _floor = _epoch


def clear() -> None:
    """Drop every entry of every cache (tests; a process that lost track, e.g. after a fork)."""
    global _epoch, _floor
    with _epoch_lock:
        _epoch += 1
        _floor = _epoch


def seconds() -> float:
    """How long an entry may live: ``HOT_CACHE_SECONDS`` (0 turns the caches off)."""
    return float(settings.HOT_CACHE_SECONDS)


#: How often a full cache looks for expired entries to drop before live ones (seconds).
SWEEP_SECONDS = 1.0


class HotCache(Generic[V]):
    """One bounded cache of values of type ``V`` (frozen, never mutated once put).

    The entries are an ``OrderedDict`` in least recently used order, each read checked against
    its own deadline: what ``cachetools.TLRUCache`` does, in one Python call a read rather than
    its five (a warm token request spent more on the cache's bookkeeping than on hashing the
    secret). Expired entries are dropped when read, and all of them before the least recently
    used are evicted for room, so the cache never holds more than ``maxsize``."""

    def __init__(self, name: str, *, maxsize: int | None = None) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._maxsize = maxsize or int(settings.HOT_CACHE_MAX_ENTRIES)
        self._swept = -math.inf  # when a full cache last dropped its expired entries
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        """The live value under ``key``, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if not _now() < entry.deadline or not _alive(entry):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return entry.value

    def put(
        self,
        key: Hashable,
        value: V,
        *,
        since: int,
        tags: Iterable[str] = (),
        expires_at: datetime | None = None,
    ) -> None:
        """Keep ``value`` under ``key`` for ``HOT_CACHE_SECONDS`` at most, and not past
        ``expires_at`` (the credential's own expiry). ``since`` is ``fill_started()`` taken
        before the value was read; ``tags`` name what the value was read from."""
        if transaction.get_connection().in_atomic_block:
            return  # it may still roll back
        ttl = seconds()
        if expires_at is not None:
            ttl = min(ttl, expires_at.timestamp() - time.time())
        if ttl <= 0:
            return
        now = _now()
        entry = _Entry(value, tuple(tags), since, now + ttl)
        if not _alive(entry):
            return
        with self._lock:
            entries = self._entries
            entries[key] = entry
            entries.move_to_end(key)
            if len(entries) > self._maxsize:
                # Expired entries make room first, but a full cache of live ones would scan
                # every entry on every put (~0.5 ms at 10,000): at most one sweep a second,
                # the least recently used out otherwise.
                if now - self._swept >= SWEEP_SECONDS:
                    self._swept = now
                    self._expire()
                while len(entries) > self._maxsize:
                    entries.popitem(last=False)

    def _expire(self) -> None:
        """Drop every expired entry (under the lock)."""
        now = _now()
        for key in [key for key, entry in self._entries.items() if not now < entry.deadline]:
            del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)
