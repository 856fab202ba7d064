"""Placement: which registry backend a new registry lives on, and the driver that reaches a
registry's backend.

A registry is placed by its first provisioning attempt, among the ``active`` backends with a
weight above 0 that carry ``REGISTRY_PLACEMENT_LABELS`` and are below their capacity, and keeps
that backend for its life. ``REGISTRY_PLACEMENT``:

- ``weighted`` (the default): weighted rendezvous hashing (highest random weight) of the cluster
  id. Each backend scores ``-weight / ln(u)``, ``u`` a uniform hash of (cluster id, backend name),
  and the highest wins: the shares follow the weights, a decision needs no shared counter, no
  row lock and no query (the backends come from the process's copy), any worker makes the same
  one for the same cluster, and adding a backend moves only the placements it wins.
- ``least_loaded``: the backend with the fewest registries relative to its weight (one count
  query per placement).

A capacity is checked by counting the backend's registries (only for backends that have one): a
burst placed by several workers at once may overshoot it by the placements in flight.
"""

from __future__ import annotations

import hashlib
import math

from django.conf import settings

from registries.backends import Backend, backend_get, backends_all
from registries.drivers import DriverError, RegistryDriver, RegistryUnavailable, get_driver
from registries.models import Registry
from registries.selectors import registries_per_backend

WEIGHTED = "weighted"
LEAST_LOADED = "least_loaded"
STRATEGIES = (WEIGHTED, LEAST_LOADED)


class NoBackendAvailable(RegistryUnavailable):
    """No backend may take a new registry now (none active, all full or filtered out): a
    transient failure, retried with backoff and, once failed, by the reconciler."""

    default_public = "No registry backend can take this registry yet; it is retried"


def _score(key: str, backend: Backend) -> float:
    digest = hashlib.sha256(f"{key}\0{backend.name}".encode()).digest()
    # A uniform number in (0, 1): 53 bits, never 0 or 1.
    uniform = (int.from_bytes(digest[:8], "big") >> 11) + 0.5
    return -backend.weight / math.log(uniform / 2**53)


def placement_candidates() -> list[Backend]:
    """The backends a new registry may go to, before capacity: active, weighted, labelled."""
    wanted = settings.REGISTRY_PLACEMENT_LABELS or {}
    return [
        backend
        for backend in backends_all()
        if backend.active and backend.weight > 0 and backend.has_labels(wanted)
    ]


def placement_choose(*, key: str, strategy: str | None = None) -> Backend:
    """The backend for the registry of cluster ``key`` (its id). Raises ``NoBackendAvailable``."""
    strategy = strategy or settings.REGISTRY_PLACEMENT
    candidates = placement_candidates()
    counted = [b for b in candidates if b.capacity is not None or strategy == LEAST_LOADED]
    counts = registries_per_backend([b.id for b in counted]) if counted else {}
    candidates = [b for b in candidates if b.capacity is None or counts.get(b.id, 0) < b.capacity]
    if not candidates:
        raise NoBackendAvailable(
            "No registry backend can take a new registry: none is active with a weight above 0"
            f", the labels {settings.REGISTRY_PLACEMENT_LABELS or {}} and room under its capacity."
            " Activate or add a backend (console or /v2/operator/registry-backends)."
        )
    if strategy == LEAST_LOADED:
        return min(candidates, key=lambda b: ((counts.get(b.id, 0) + 1) / b.weight, b.name))
    return max(candidates, key=lambda b: _score(key, b))


def registry_backend(registry: Registry) -> Backend | None:
    """The backend ``registry`` lives on; None before it is placed."""
    if registry.backend_id is None:
        return None
    backend = backend_get(registry.backend_id)
    if backend is None:
        raise DriverError(f"Registry backend {registry.backend_id} no longer exists.")
    return backend


def registry_driver(registry: Registry) -> RegistryDriver:
    """The driver of ``registry``, talking to its backend (to the settings' registry before it
    is placed: nothing of it is on any backend then)."""
    return get_driver(registry.driver, registry_backend(registry))
