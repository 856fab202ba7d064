"""What a namespace holds, read from the registry itself, for the usage scan
(``registries.services.usage_scan``): its repositories (the catalog), each one's tags, each tag's
manifest digest, and, for each manifest not already known, its media type, its own size and every
blob it references with its size.

Manifests are immutable by digest, so a manifest the inventory already knows completely is not
fetched again: a rescan of an unchanged namespace reads the catalog, the tag lists and one
``HEAD`` per tag, and no manifest. An index (OCI image index, Docker manifest list) references
its member manifests, each with its own size, and their blobs: its members are fetched by
digest, or taken from what is known of them.

The requests go through ``DistributionDriver``'s own helpers (tokens, paging, errors): a registry
that does not answer raises ``RegistryUnavailable``, anything else unexpected ``DriverError``.
The readers here (``image_repositories``, ``pull_token``, ``manifest_fetch``) also serve the
verification after garbage collection (``registries.drivers.verification``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from registries.drivers.base import DriverError, RegistryDriver
from registries.drivers.distribution import (
    CANARY_REPOSITORY,
    MANIFEST_TYPES,
    DistributionDriver,
)
from registries.drivers.manifests import control_plane_token
from registries.inventory import INDEX_MEDIA_TYPES
from registries.tokens import Principal, Scope

#: How deep an index of indexes is followed (OCI allows nesting; registries see one level).
MAX_DEPTH = 4


@dataclass(frozen=True)
class ManifestRecord:
    """A manifest as the inventory records it (``registries.inventory.Manifest``)."""

    digest: str
    media_type: str
    size: int
    #: ``{digest: size}`` of every blob it references (an index: its members and theirs).
    blobs: dict[str, int]


@dataclass
class NamespaceInventory:
    """What the registry holds in a namespace."""

    #: ``{repository: {tag: manifest digest}}``, every repository the catalog lists.
    repositories: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The manifests that were not known and were fetched, tagged ones by their digest.
    manifests: dict[str, ManifestRecord] = field(default_factory=dict)
    #: How many manifests were fetched (``GET``), index members included.
    fetched: int = 0


def namespace_inventory(
    driver: RegistryDriver, *, namespace: str, known: Mapping[str, ManifestRecord]
) -> NamespaceInventory:
    """Read what ``namespace`` holds; ``known`` are the manifests not to fetch again."""
    if not isinstance(driver, DistributionDriver):
        raise DriverError(f"The {driver.name} driver cannot list a namespace's inventory.")
    return _Reader(driver, namespace, known).read()


class _Reader:
    def __init__(
        self, driver: DistributionDriver, namespace: str, known: Mapping[str, ManifestRecord]
    ) -> None:
        self.driver, self.namespace, self.known = driver, namespace, known
        self.seen = NamespaceInventory()
        #: Index members fetched, in case another index names them too.
        self.members: dict[str, ManifestRecord] = {}

    def read(self) -> NamespaceInventory:
        for repository in image_repositories(self.driver, self.namespace):
            self.seen.repositories[repository] = dict(self._repository(repository))
        return self.seen

    def _repository(self, repository: str) -> Iterator[tuple[str, str]]:
        token = pull_token(self.driver, self.namespace, repository)
        for tag in self.driver.tags(repository, token=token):
            digest = self.driver._manifest_digest(repository, tag, token=token)
            if digest is None:
                continue  # deleted since the tag list was read
            if digest not in self.known and digest not in self.seen.manifests:
                record = self._manifest(repository, digest, token=token, depth=0)
                if record is None:
                    continue  # its manifest was deleted meanwhile: so is the tag
                self.seen.manifests[digest] = record
            yield tag, digest

    def _manifest(
        self, repository: str, digest: str, *, token: str, depth: int
    ) -> ManifestRecord | None:
        fetched = manifest_fetch(self.driver, repository, digest, token=token)
        if fetched is None:
            return None
        self.seen.fetched += 1
        blobs: dict[str, int] = {}
        for member in fetched.members:
            blobs[member["digest"]] = int(member.get("size") or 0)
            blobs.update(self._member_blobs(repository, member["digest"], token, depth))
        for found in fetched.blobs:
            blobs[found["digest"]] = int(found.get("size") or 0)
        return ManifestRecord(digest, fetched.media_type, fetched.size, blobs)

    def _member_blobs(self, repository: str, digest: str, token: str, depth: int) -> dict[str, int]:
        """The blobs of an index's member, known or fetched (a member deleted meanwhile has
        none left to count)."""
        member = self.known.get(digest) or self.seen.manifests.get(digest)
        member = member or self.members.get(digest)
        if member is None and depth < MAX_DEPTH:
            member = self._manifest(repository, digest, token=token, depth=depth + 1)
            if member is not None:
                self.members[digest] = member
        return dict(member.blobs) if member is not None else {}


def image_repositories(driver: DistributionDriver, namespace: str) -> Iterator[str]:
    """The repositories of ``namespace`` the catalog lists, but the health canary's (blobs
    only, written and deleted by the canary)."""
    canary = f"{namespace}/{CANARY_REPOSITORY}"
    for repository in driver.repositories(namespace=namespace):
        if repository != canary:
            yield repository


def pull_token(driver: DistributionDriver, namespace: str, repository: str) -> str:
    """A control-plane token that may read ``repository`` and nothing else."""
    return control_plane_token(
        Principal.control_plane(namespace),
        [Scope("repository", repository, ("pull",))],
        driver.token_service,
    )


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest as the registry served it: what it references, split by kind."""

    #: The digest the registry answered (``Docker-Content-Digest``), else the one asked for.
    digest: str
    media_type: str
    #: Its own size: the bytes served.
    size: int
    #: An index's (or manifest list's) member manifests: descriptors with a digest.
    members: list[dict[str, Any]]
    #: An image manifest's blobs: its config, layers and (an artifact's) ``blobs``.
    blobs: list[dict[str, Any]]


def manifest_fetch(
    driver: DistributionDriver, repository: str, reference: str, *, token: str
) -> FetchedManifest | None:
    """``GET`` manifest ``reference`` (a digest or a tag) of ``repository``, any media type;
    None if the registry answers 404 (deleted, or its data gone). ``DriverError`` for a body that
    is not a manifest; ``RegistryUnavailable`` if the registry does not answer."""
    response = driver._request(
        "GET",
        driver._url(f"/v2/{repository}/manifests/{quote(reference)}"),
        token=token,
        expect=(200, 404),
        headers={"Accept": MANIFEST_TYPES},
    )
    if response.status_code == 404:
        return None
    try:
        document = json.loads(response.content)
        if not isinstance(document, dict):
            raise ValueError(type(document).__name__)
    except ValueError as exc:
        raise DriverError(
            f"GET {repository}@{reference} answered a manifest that is not a JSON object.",
            public="The registry answered a manifest that could not be read",
        ) from exc
    media_type = str(
        document.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
    )
    digest = response.headers.get("Docker-Content-Digest") or reference
    if media_type in INDEX_MEDIA_TYPES or "manifests" in document:
        return FetchedManifest(
            digest,
            media_type,
            len(response.content),
            list(_descriptors(document.get("manifests"))),
            [],
        )
    found = [document.get("config"), *(document.get("layers") or [])]
    found += [*(document.get("blobs") or [])]
    return FetchedManifest(digest, media_type, len(response.content), [], list(_descriptors(found)))


def _descriptors(values: Any) -> Iterator[dict[str, Any]]:
    """The well-formed descriptors (objects with a digest) of a list, skipping the rest."""
    for value in values or []:
        if isinstance(value, dict) and isinstance(value.get("digest"), str):
            yield value
