"""The registry backends as each process sees them: every ``RegistryBackend`` row, read at most
once every ``REGISTRY_BACKENDS_CACHE_SECONDS`` per process (``backends_all``), so that placing a
burst of registries, building drivers and checking a token's ``service`` read no backend row per
registry or request. A write through ``registries.services.backends`` forgets the copy of the
process that made it; the others see it within the cache's lifetime.

A blank ``api_url``, ``public_host`` or ``token_service`` (only the ``default`` backend may have
one) follows ``REGISTRY_URL``, ``REGISTRY_PUBLIC_HOST`` or ``REGISTRY_TOKEN_SERVICE``: with no
configuration, the one backend is the registry the settings name, as before backends existed.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from registries.models import DEFAULT_BACKEND, BackendState, RegistryBackend


@dataclass(frozen=True)
class Backend:
    """What the control plane needs of one ``RegistryBackend`` row (its blank addresses
    resolved from the settings when asked)."""

    id: int
    name: str
    raw_api_url: str
    raw_public_host: str
    raw_token_service: str
    storage: str
    weight: int
    capacity: int | None
    state: str
    labels: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: Set while a garbage collection holds the backend's window: no push is granted until then
    #: (``registries.services.maintenance``).
    pushes_refused_until: dt.datetime | None = None

    @classmethod
    def of(cls, row: RegistryBackend) -> Backend:
        return cls(
            id=row.pk,
            name=row.name,
            raw_api_url=row.api_url,
            raw_public_host=row.public_host,
            raw_token_service=row.token_service,
            storage=row.storage,
            weight=row.weight,
            capacity=row.capacity,
            state=row.state,
            labels=dict(row.labels or {}),
            pushes_refused_until=row.pushes_refused_until,
        )

    @property
    def api_url(self) -> str:
        return (self.raw_api_url or settings.REGISTRY_URL).rstrip("/")

    @property
    def public_host(self) -> str:
        return (self.raw_public_host or settings.REGISTRY_PUBLIC_HOST).rstrip("/")

    @property
    def token_service(self) -> str:
        return self.raw_token_service or settings.REGISTRY_TOKEN_SERVICE

    @property
    def active(self) -> bool:
        return self.state == BackendState.ACTIVE

    def push_retry_after(self, now: dt.datetime) -> int:
        """Whole seconds (at least 1) until its maintenance window grants pushes again; 0 when
        it grants them now."""
        until = self.pushes_refused_until
        if until is None or until <= now:
            return 0
        return max(1, math.ceil((until - now).total_seconds()))

    def has_labels(self, wanted: dict[str, Any]) -> bool:
        return all(self.labels.get(key) == value for key, value in wanted.items())


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backends: tuple[Backend, ...] = ()
        self._until = 0.0
        self._read_at = 0.0

    def get(self, max_age: float | None = None) -> tuple[Backend, ...]:
        now = time.monotonic()
        fresh = max_age is None or self._read_at + max_age > now
        if self._until > now and fresh:
            return self._backends
        rows = list(RegistryBackend.objects.order_by("name"))
        if not rows:  # a fresh database (or a test's flushed one): the settings' backend
            default, _ = RegistryBackend.objects.get_or_create(name=DEFAULT_BACKEND)
            rows = [default]
        backends = tuple(Backend.of(row) for row in rows)
        with self._lock:
            self._backends, self._read_at = backends, time.monotonic()
            self._until = self._read_at + settings.REGISTRY_BACKENDS_CACHE_SECONDS
        return backends

    def forget(self) -> None:
        with self._lock:
            self._backends, self._until = (), 0.0


_cache = _Cache()


def backends_all() -> tuple[Backend, ...]:
    """Every backend, by name: this process's copy, at most ``REGISTRY_BACKENDS_CACHE_SECONDS``
    old (one query when it is older)."""
    return _cache.get()


def backends_forget() -> None:
    """Forget this process's copy: the next ``backends_all`` reads the table."""
    _cache.forget()


def backend_get(backend_id: int) -> Backend | None:
    """The backend ``backend_id``; read again once if this process's copy does not know it (a
    backend created moments ago by another process)."""
    for backend in backends_all():
        if backend.id == backend_id:
            return backend
    backends_forget()
    for backend in backends_all():
        if backend.id == backend_id:
            return backend
    return None


#: How old the copy may be when a token is asked for a service it does not know: a backend added
#: moments ago elsewhere is known within this, at one query a second at most for unknown ones.
UNKNOWN_SERVICE_RECHECK_SECONDS = 1.0


def backend_for_service(service: str) -> Backend | None:
    """The backend whose token ``service`` is ``service`` (this process's copy), or None."""
    for backend in _cache.get():
        if backend.token_service == service:
            return backend
    return None


def backend_services(service: str | None = None) -> frozenset[str]:
    """The ``service`` of every backend: what the token endpoint issues tokens for. Asked about
    a ``service`` the copy does not know, it reads the backends again if the copy is older than
    ``UNKNOWN_SERVICE_RECHECK_SECONDS``."""
    services = frozenset(backend.token_service for backend in _cache.get())
    if service is None or service in services:
        return services
    return frozenset(b.token_service for b in _cache.get(max_age=UNKNOWN_SERVICE_RECHECK_SECONDS))
