"""Registry drivers by name. ``REGISTRY_DRIVER`` picks the one new registries use; each driver
is built for a registry backend (``registries.backends.Backend``: its API URL, public host and
token service), or for the settings' registry without one."""

from __future__ import annotations

from collections.abc import Callable

from registries.backends import Backend
from registries.drivers.base import (
    CachedProvisioning,
    DriverError,
    RegistryDriver,
    RegistryUnavailable,
)
from registries.drivers.distribution import DistributionDriver

DRIVERS: dict[str, Callable[[Backend | None], RegistryDriver]] = {
    "distribution": DistributionDriver.for_backend,
}


def get_driver(name: str, backend: Backend | None = None) -> RegistryDriver:
    try:
        factory = DRIVERS[name]
    except KeyError:
        raise DriverError(
            f"Unknown registry driver {name!r}; known drivers: {', '.join(DRIVERS)}"
        ) from None
    return factory(backend)


__all__ = [
    "DRIVERS",
    "CachedProvisioning",
    "DriverError",
    "RegistryDriver",
    "RegistryUnavailable",
    "get_driver",
]
