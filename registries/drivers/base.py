"""What the control plane needs from a registry backend, and how a backend reports failure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable


class DriverError(Exception):
    """The registry cannot host the namespace; retrying will not help (a misconfiguration).

    Two texts, decided where the error is made: ``str(exc)`` (``detail``) is for operators, the
    console and the logs, with the URLs, hosts and library messages that locate the fault;
    ``public`` names the failure for the cluster's tenants (the REST API's registry resource,
    conditions and events) without internal hosts or library text.
    """

    default_public = "The registry is not configured for this service; an operator must fix it"

    def __init__(self, detail: str, *, public: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.public = public or self.default_public


class RegistryUnavailable(DriverError):
    """The registry did not answer, or answered 5xx: a transient failure worth retrying."""

    default_public = "The registry did not answer"


class RegistryDriver(Protocol):
    """A backend that hosts cluster namespaces. Every method is idempotent."""

    @property
    def name(self) -> str:
        """The driver's name, as stored on ``Registry.driver``."""
        ...

    def provision(self, *, namespace: str) -> str:
        """Make ``namespace`` ready for pushes; return its URL as jobs use it (``host/namespace``,
        no scheme, no trailing slash). Raises ``RegistryUnavailable`` or ``DriverError``."""
        ...

    def deprovision(self, *, namespace: str) -> int:
        """Delete every image in ``namespace``; return how many manifests were deleted. Raises
        ``RegistryUnavailable`` or ``DriverError``."""
        ...

    def canary(self, *, namespace: str) -> str:
        """Write something small in ``namespace``, read it back and delete it, as a job would;
        describe what was seen. Raises ``RegistryUnavailable`` or ``DriverError``."""
        ...

    def check_api(self) -> str:
        """Check that the registry answers and trusts our tokens; describe what was seen.
        Raises ``RegistryUnavailable`` or ``DriverError``."""
        ...

    def tag_digest(self, *, namespace: str, repository: str, tag: str) -> str | None:
        """The manifest digest ``repository:tag`` points to now; None if there is no such tag.
        Raises ``RegistryUnavailable`` or ``DriverError``."""
        ...

    def tag_digests(
        self, *, namespace: str, repository: str, tags: Iterable[str] | None = None
    ) -> dict[str, str]:
        """Every tag of ``repository`` now (or only ``tags``, those it still has) and the
        manifest digest it points to. Raises ``RegistryUnavailable`` or ``DriverError``."""
        ...

    def tag_names(self, *, namespace: str, repository: str) -> list[str]:
        """The names of ``repository``'s tags now (its tag list: no ``HEAD``)."""
        ...

    def manifest_delete(self, *, namespace: str, repository: str, digest: str) -> bool:
        """Delete manifest ``digest`` of ``repository``, and with it every tag of the repository
        that points to it; False if it was already gone. Raises ``RegistryUnavailable`` or
        ``DriverError``."""
        ...


@runtime_checkable
class CachedProvisioning(Protocol):
    """A driver that can sometimes provision without calling the registry: provisioning then
    takes one transaction instead of two (``registries.services.provisioning``)."""

    def provision_cached(self, *, namespace: str) -> str | None:
        """What ``provision`` would return, if it can answer without calling the registry now
        (it checked the registry moments ago); None if it must call it."""
        ...
