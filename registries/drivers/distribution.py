"""CNCF Distribution (``docker-registry`` 2.8, ``registry:2``/``registry:3``), shared by clusters.

Distribution has no call to create a namespace: a repository exists once something is pushed to
it. Provisioning therefore checks that the registry answers the v2 API, and the namespace becomes
usable through the credentials we grant for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from django.conf import settings

from registries.drivers.base import DriverError, RegistryUnavailable

API_VERSION_HEADER = "Docker-Distribution-API-Version"
#: Besides 5xx, answers that say "not now" rather than "not this": a timeout, a rate limit.
TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class DistributionDriver:
    api_url: str
    public_host: str
    timeout: float
    name: str = "distribution"

    @classmethod
    def from_settings(cls) -> DistributionDriver:
        return cls(
            api_url=settings.REGISTRY_URL,
            public_host=settings.REGISTRY_PUBLIC_HOST,
            timeout=settings.REGISTRY_HTTP_TIMEOUT,
        )

    def provision(self, *, namespace: str) -> str:
        self.check_api()
        return f"{self.public_host}/{namespace}"

    def check_api(self) -> int:
        """``GET /v2/`` must answer 200, or 401 with a challenge, from a Distribution registry.
        Returns the status; raises ``RegistryUnavailable`` or ``DriverError`` otherwise."""
        endpoint = f"{self.api_url}/v2/"
        try:
            response = requests.get(endpoint, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"GET {endpoint} failed: {exc}") from exc
        if response.status_code >= 500 or response.status_code in TRANSIENT_STATUSES:
            raise RegistryUnavailable(f"GET {endpoint} answered {response.status_code}")
        if response.status_code not in (200, 401):
            raise DriverError(
                f"GET {endpoint} answered {response.status_code}; expected 200 or 401 from a "
                "registry. Check REGISTRY_URL."
            )
        if response.headers.get(API_VERSION_HEADER) != "registry/2.0":
            raise DriverError(
                f"GET {endpoint} did not come from a registry (no '{API_VERSION_HEADER}: "
                "registry/2.0' header). Check REGISTRY_URL."
            )
        return response.status_code
