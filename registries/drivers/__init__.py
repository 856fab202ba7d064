"""Registry drivers by name. ``REGISTRY_DRIVER`` picks the one new registries use."""

from __future__ import annotations

from collections.abc import Callable

from registries.drivers.base import (
    CachedProvisioning,
    DriverError,
    RegistryDriver,
    RegistryUnavailable,
)
from registries.drivers.distribution import DistributionDriver

DRIVERS: dict[str, Callable[[], RegistryDriver]] = {
    "distribution": DistributionDriver.from_settings,
}


def get_driver(name: str) -> RegistryDriver:
    try:
        factory = DRIVERS[name]
    except KeyError:
        raise DriverError(
            f"Unknown registry driver {name!r}; known drivers: {', '.join(DRIVERS)}"
        ) from None
    return factory()


__all__ = [
    "DRIVERS",
    "CachedProvisioning",
    "DriverError",
    "RegistryDriver",
    "RegistryUnavailable",
    "get_driver",
]
