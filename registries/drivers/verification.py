"""Whether every tag of a namespace can still be pulled, read from the registry itself: the check
that follows a garbage collection (``registries.services.verification``).

For each repository the catalog lists (the health canary's aside), each tag: its manifest
(``GET`` by tag, any media type), an index's members (``GET`` by digest, nested indexes to
``MAX_DEPTH``), and every blob an image manifest references (config, layers; foreign layers
live elsewhere and are skipped). What the registry does not serve is a ``Finding``.

A blob is read, not asked about: ``GET`` of its first byte (``Range: bytes=0-0``), and the byte
must arrive. Distribution answers ``HEAD`` from its blob-descriptor cache (in memory, or Redis
shared by replicas) without looking at storage, and garbage-collect clears neither, so a blob
whose data is gone is still "there" to ``HEAD`` (and to a client deciding whether to push it
again) while every pull of it fails; the first byte comes from storage. Checked once per
repository: a manifest or blob that two tags share is requested once, and reported for each
tag that needs it (each is broken).

A tag listed and then gone (its manifest 404, and the tag no longer in a fresh tag list) was
deleted while the check ran: not a finding. Requests go through ``DistributionDriver``'s helpers
with the control plane's own pull token per repository; a registry that does not answer raises
``RegistryUnavailable``, anything else unexpected ``DriverError`` (the caller records the whole
namespace as unchecked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests

from registries.drivers.base import DriverError, RegistryDriver, RegistryUnavailable
from registries.drivers.distribution import DistributionDriver
from registries.drivers.inventory import (
    MAX_DEPTH,
    FetchedManifest,
    image_repositories,
    manifest_fetch,
    pull_token,
)

MANIFEST, BLOB = "manifest", "blob"
#: Where the registry sends a client for a blob's bytes (S3 storage with redirects on).
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Finding:
    """A manifest or blob that ``repository:tag`` needs and the registry did not serve."""

    repository: str
    tag: str
    kind: str  # MANIFEST or BLOB
    #: "" when the tag's own manifest is missing and its digest is not known.
    digest: str
    #: The index or manifest that references it; "" for the tag's own manifest.
    parent_digest: str
    #: What the registry answered (for operators: no secret in it).
    detail: str


@dataclass
class NamespaceVerification:
    """What was checked in a namespace, and what was missing."""

    #: Tags checked (those deleted during the check are not counted).
    tags: int = 0
    #: Blobs checked (configs and layers), each once per repository.
    blobs: int = 0
    findings: list[Finding] = field(default_factory=list)


#: A problem under a manifest, before it is attributed to a tag: (kind, digest, parent, detail).
_Problem = tuple[str, str, str, str]


def namespace_verify(
    driver: RegistryDriver,
    *,
    namespace: str,
    expected: Mapping[tuple[str, str], str] | None = None,
) -> NamespaceVerification:
    """Check every tag of ``namespace`` (see the module). ``expected``: ``{(repository, tag):
    digest}`` as the inventory knows them, to name the digest of a tag whose manifest is gone."""
    if not isinstance(driver, DistributionDriver):
        raise DriverError(f"The {driver.name} driver cannot verify a namespace.")
    checker = _Checker(driver, namespace, expected or {})
    for repository in image_repositories(driver, namespace):
        checker.repository(repository)
    return checker.result


class _Checker:
    def __init__(
        self,
        driver: DistributionDriver,
        namespace: str,
        expected: Mapping[tuple[str, str], str],
    ) -> None:
        self.driver, self.namespace, self.expected = driver, namespace, expected
        self.result = NamespaceVerification()
        #: In the repository being checked: each manifest's problems, by digest, and each
        #: blob's (None: served). A blob is reachable through the repositories that link it
        #: only, so what one repository saw says nothing of another's.
        self.manifests: dict[str, list[_Problem]] = {}
        self.blobs: dict[str, str | None] = {}

    def repository(self, repository: str) -> None:
        token = pull_token(self.driver, self.namespace, repository)
        self.manifests, self.blobs = {}, {}
        listed: set[str] | None = None
        for tag in self.driver.tags(repository, token=token):
            fetched = manifest_fetch(self.driver, repository, tag, token=token)
            if fetched is None:
                if listed is None:  # read again once: was it deleted meanwhile?
                    listed = set(self.driver.tags(repository, token=token))
                if tag not in listed:
                    continue
                digest = self.expected.get((repository, tag), "")
                problems = [(MANIFEST, digest, "", "the tag's manifest: 404")]
            else:
                problems = self._manifest(repository, fetched, token=token, depth=0)
            self.result.tags += 1
            self.result.findings += [Finding(repository, tag, *problem) for problem in problems]

    def _manifest(
        self, repository: str, fetched: FetchedManifest, *, token: str, depth: int
    ) -> list[_Problem]:
        """The problems under a manifest that was served (checked once per repository)."""
        if fetched.digest in self.manifests:
            return self.manifests[fetched.digest]
        problems: list[_Problem] = []
        for member in fetched.members:
            digest = str(member["digest"])
            if digest in self.manifests:
                problems += self.manifests[digest]
                continue
            child = manifest_fetch(self.driver, repository, digest, token=token)
            if child is None:
                self.manifests[digest] = [(MANIFEST, digest, fetched.digest, "index member: 404")]
                problems += self.manifests[digest]
            elif depth < MAX_DEPTH:
                problems += self._manifest(repository, child, token=token, depth=depth + 1)
        for blob in fetched.blobs:
            if _foreign(blob):
                continue
            digest = str(blob["digest"])
            if digest not in self.blobs:
                self.blobs[digest] = self._blob_missing(repository, blob, token=token)
                self.result.blobs += 1
            if self.blobs[digest] is not None:
                problems.append((BLOB, digest, fetched.digest, str(self.blobs[digest])))
        self.manifests[fetched.digest] = problems
        return problems

    def _blob_missing(self, repository: str, blob: dict[str, Any], *, token: str) -> str | None:
        """Why the registry does not serve the blob; None if it does (its first byte arrived,
        or, for an empty blob, ``HEAD`` found it)."""
        digest = str(blob["digest"])
        url = self.driver._url(f"/v2/{repository}/blobs/{digest}")
        if int(blob.get("size") or 0) == 0:  # no first byte to read
            head = self.driver._request("HEAD", url, token=token, expect=(200, 404))
            return None if head.status_code == 200 else "HEAD: 404"
        try:
            response = self.driver._request(
                "GET", url, token=token, expect=(200, 206, 404, *_REDIRECTS), headers=_FIRST_BYTE
            )
        except RegistryUnavailable as exc:
            if isinstance(exc.__cause__, requests.exceptions.ChunkedEncodingError):
                # The headers came (from the descriptor cache), the data did not (storage).
                return "GET: the registry described it but served none of its data"
            raise
        if response.status_code == 404:
            return "GET: 404"
        if response.status_code in _REDIRECTS:
            # Its storage serves it (a presigned URL): read the byte there, without our token.
            location = urljoin(url, response.headers.get("Location", ""))
            response = self.driver._request(
                "GET", location, expect=(200, 206, 403, 404), headers=_FIRST_BYTE,
                what=f"GET {repository}@{digest} where the registry redirected",
            )  # fmt: skip
            if response.status_code in (403, 404):
                return f"GET (redirected to its storage): {response.status_code}"
        return None if response.content[:1] else f"GET: {response.status_code} with no data"


_FIRST_BYTE = {"Range": "bytes=0-0"}


def _foreign(descriptor: dict[str, Any]) -> bool:
    """A foreign (non-distributable) layer: it lives where its ``urls`` say, not here."""
    media_type = str(descriptor.get("mediaType") or "")
    return "foreign" in media_type or "nondistributable" in media_type


__all__ = ["BLOB", "MANIFEST", "Finding", "NamespaceVerification", "namespace_verify"]
