"""Deleting an image from a Distribution registry by tag, for ``DistributionDriver`` (its own
module: ``distribution.py`` is full).

Distribution deletes manifests by digest only (a ``DELETE`` by tag answers ``UNSUPPORTED``), and
deleting one removes every tag of the repository that points to it. So the tag's digest is asked
of the registry first (what it points to now, which the inventory may not know yet), and the
caller decides whether the other tags on that digest may go (``registries.services.tags``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import requests

from registries.drivers.base import DriverError
from registries.keys import SigningKeyMissing
from registries.tokens import Principal, Scope, token_issue


class _Driver(Protocol):
    @property
    def token_service(self) -> str: ...

    def _manifest_digest(self, repository: str, tag: str, *, token: str) -> str | None: ...

    def tags(self, repository: str, *, token: str) -> list[str]: ...

    def _url(self, path: str) -> str: ...

    def _request(
        self, method: str, url: str, *, expect: tuple[int, ...], token: str | None = None
    ) -> requests.Response: ...


class ManifestDeletion:
    """``tag_digest``, ``tag_digests`` and ``manifest_delete``, with a control-plane token for
    the one repository (pull and delete, nothing else)."""

    def tag_digest(self: _Driver, *, namespace: str, repository: str, tag: str) -> str | None:
        """The digest ``repository:tag`` points to in the registry; None if it has no such tag."""
        return self._manifest_digest(repository, tag, token=_token(self, namespace, repository))

    def tag_digests(
        self: _Driver, *, namespace: str, repository: str, tags: Iterable[str] | None = None
    ) -> dict[str, str]:
        """Every tag of ``repository`` in the registry now and its digest (the tag list, then a
        ``HEAD`` a tag): what a deletion by digest would take with it. With ``tags``, only those
        are asked (a ``HEAD`` each, no list): a retention run lists a repository once and asks
        again only for a group's own tags right before deleting it, so that a run deleting k
        groups of n tags costs n + k·group requests, not n·k."""
        token = _token(self, namespace, repository)
        names = self.tags(repository, token=token) if tags is None else sorted(set(tags))
        found = {tag: self._manifest_digest(repository, tag, token=token) for tag in names}
        return {tag: digest for tag, digest in found.items() if digest is not None}

    def tag_names(self: _Driver, *, namespace: str, repository: str) -> list[str]:
        """The names of ``repository``'s tags in the registry now (its tag list, paginated)."""
        return list(self.tags(repository, token=_token(self, namespace, repository)))

    def manifest_delete(self: _Driver, *, namespace: str, repository: str, digest: str) -> bool:
        """Delete manifest ``digest`` of ``repository`` (and so every tag on it); False if it was
        already gone."""
        response = self._request(
            "DELETE",
            self._url(f"/v2/{repository}/manifests/{digest}"),
            token=_token(self, namespace, repository),
            expect=(202, 404),
        )
        return response.status_code == 202


def _token(driver: _Driver, namespace: str, repository: str) -> str:
    scope = Scope("repository", repository, ("pull", "delete"))
    return control_plane_token(Principal.control_plane(namespace), [scope], driver.token_service)


def control_plane_token(principal: Principal, scopes: list[Scope], service: str) -> str:
    """A token of ours for the control plane's own calls to the registry."""
    try:
        return token_issue(principal, scopes, service=service).token
    except SigningKeyMissing as exc:
        raise DriverError(
            str(exc),
            public="The registry token service has no signing key; an operator must create one",
        ) from exc
