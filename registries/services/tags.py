"""Deleting a tag of a registry's repository (the REST API's ``DELETE .../tags/{tag}``).

Distribution deletes a manifest by digest, and every tag of the repository that points to it
goes with it. So a tag that shares its digest with other tags is refused unless the caller says
those may go too (``include_shared_digest``): deleting ``latest`` must not silently delete
``v1.2`` as well. The digest is the one the registry answers for the tag now; the other tags are
the ones the inventory knows on that digest (a tag pushed onto it in the moment between the
check and the deletion goes too, as it would with any registry client).

A caller deleting what it planned from the inventory (a retention run) passes the digest it
planned (``expected_digest``): then the registry's own tag list is read right before the
``DELETE`` (a ``HEAD`` a tag), and the deletion is refused when the tag points elsewhere now or
when the tags on the digest in the registry are not the ones the inventory knows (a tag pushed,
moved or deleted in the registry that the inventory, fed by notifications, has not seen yet).

The registry is asked first, outside any transaction (it may be slow); then the inventory is
brought up to date in one transaction holding the registry's row lock, with the audit row. A tag
the registry no longer has is only forgotten (nothing is deleted in the registry).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q

from registries.drivers.base import RegistryDriver
from registries.inventory import Repository, Tag
from registries.models import Registry, State
from registries.services.audit import registry_audit
from registries.services.placement import registry_driver
from registries.services.usage import (
    inventory_lock,
    manifests_unreferenced_delete,
    tags_remove,
    usage_refresh,
)

TAG_DELETED = "REGISTRY_TAG_DELETED"


class TagDeletionRefused(Exception):
    """The registry cannot delete the tag as asked; ``str()`` says why, for the caller."""


class RegistryNotReady(TagDeletionRefused):
    pass


class TagNotFound(TagDeletionRefused):
    pass


class RegistryChanged(TagDeletionRefused):
    """The registry no longer holds what the caller planned to delete (``expected_digest``)."""


class SharedDigest(TagDeletionRefused):
    """Other tags point to the tag's manifest, and would be deleted with it."""

    def __init__(self, message: str, tags: list[str]) -> None:
        super().__init__(message)
        self.tags = tags


@dataclass(frozen=True)
class TagDeletion:
    """What a deletion removed: the manifest and every tag that pointed to it."""

    repository: str
    digest: str
    tags: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0


def tag_delete(
    *,
    registry: Registry,
    repository: str,
    tag: str,
    include_shared_digest: bool = False,
    expected_digest: str | None = None,
    registry_tags: RegistryTags | None = None,
) -> TagDeletion:
    """Delete ``repository:tag`` (``repository`` relative to the namespace) from the registry by
    its manifest's digest, then from the inventory, and record it in the audit log.

    Raises ``TagNotFound`` (the inventory has no such repository or tag), ``RegistryNotReady``,
    ``SharedDigest`` (other tags on the digest, unless ``include_shared_digest``),
    ``RegistryChanged`` (with ``expected_digest``: the registry's tags differ from it), or the
    driver's ``DriverError`` (the registry did not answer as it should); nothing is written then.
    ``registry_tags``: a run's view of the registry's tags (``RegistryTags``), kept across its
    deletions instead of listing the repository again for each.
    """
    name = f"{registry.namespace}/{repository}"
    known = Tag.objects.filter(repository__registry=registry, repository__name=name)
    if not Repository.objects.filter(registry=registry, name=name).exists():
        raise TagNotFound(f"No repository {repository!r} in this registry")
    if not known.filter(name=tag).exists():
        raise TagNotFound(f"No tag {tag!r} in repository {repository!r}")
    if registry.state != State.READY:
        raise RegistryNotReady(
            f"The registry is {registry.state}: tags can be deleted only while it is ready."
        )
    driver = registry_driver(registry)
    current: dict[str, str] | None = None
    if expected_digest is None:
        digest = driver.tag_digest(namespace=registry.namespace, repository=name, tag=tag)
    else:
        view = registry_tags if registry_tags is not None else RegistryTags()
        group = known.filter(Q(name=tag) | Q(digest=expected_digest)).values_list("name", flat=True)
        current = view.current(driver, registry.namespace, name, {tag, *group})
        digest = current.get(tag)
    if digest is None:
        # Gone from the registry already (deleted there, or never arrived): only the inventory
        # is behind. Nothing is deleted in the registry, where other tags may still point to the
        # manifest the inventory remembers.
        digest = known.filter(name=tag).values_list("digest", flat=True).first() or ""
        removed = [tag]
    else:
        others = sorted(
            known.filter(digest=digest).exclude(name=tag).values_list("name", flat=True)
        )
        if others and not include_shared_digest:
            raise SharedDigest(
                f"Tag {tag!r} shares its manifest {digest} with {', '.join(others)}: deleting "
                "it deletes them too. Retry with include_shared_digest=true to delete them all.",
                others,
            )
        if current is not None:
            _check_registry(current, tag=tag, others=others, expected_digest=expected_digest)
        driver.manifest_delete(namespace=registry.namespace, repository=name, digest=digest)
        removed = sorted({tag, *others})
        if registry_tags is not None:
            registry_tags.forget(name, removed)
    with transaction.atomic():
        locked = inventory_lock(registry.pk)
        if locked is None:  # deleted meanwhile: nothing left to account for
            raise TagNotFound("No registry found")
        before = locked.usage_bytes
        for gone in removed:
            tags_remove(locked, repository=name, tag=gone)
        manifests_unreferenced_delete(locked)
        after = usage_refresh(locked).usage_bytes
        deletion = TagDeletion(
            repository=name, digest=digest, tags=removed, bytes_before=before, bytes_after=after
        )
        registry_audit(
            registry,
            TAG_DELETED,
            {
                "repository": name,
                "tag": tag,
                "digest": digest,
                "tags": removed,
                "bytes": [before, after],
            },
        )
    return deletion


class RegistryTags:
    """A retention run's view of the registry's tags (tag -> digest), per repository: each
    repository listed once (a ``HEAD`` a tag), then only a group's own tags (the inventory's and
    the view's on its digest) asked again right before its ``DELETE``, and the deleted tags
    dropped here. Listing the digests of every tag for every deletion made a run quadratic in a
    repository's tags; the tag list itself (one request) is read again before each deletion, so
    a tag pushed since the listing is asked too, whether or not its event has arrived."""

    def __init__(self) -> None:
        self._tags: dict[str, dict[str, str]] = {}

    def current(
        self, driver: RegistryDriver, namespace: str, repository: str, group: set[str]
    ) -> dict[str, str]:
        """``repository``'s tags, with ``group`` (and the tags the view has on their digests)
        as the registry answers for them now."""
        listed = self._tags.get(repository)
        if listed is None:
            listed = driver.tag_digests(namespace=namespace, repository=repository)
            self._tags[repository] = listed
            return listed
        digests = {listed[tag] for tag in group if tag in listed}
        asked = group | {tag for tag, digest in listed.items() if digest in digests}
        # A tag pushed since the listing, whose event has not arrived, may be on the digest too:
        # the tag list (one request) names it, and it is asked as well.
        names = set(driver.tag_names(namespace=namespace, repository=repository))
        for gone in set(listed) - names - asked:
            listed.pop(gone)
        asked |= names - set(listed)
        fresh = driver.tag_digests(namespace=namespace, repository=repository, tags=asked)
        for tag in asked:
            if tag in fresh:
                listed[tag] = fresh[tag]
            else:
                listed.pop(tag, None)
        return listed

    def forget(self, repository: str, tags: list[str]) -> None:
        """Drop ``tags``, deleted just now, from the view of ``repository``."""
        listed = self._tags.get(repository, {})
        for tag in tags:
            listed.pop(tag, None)


def _check_registry(
    current: dict[str, str], *, tag: str, others: list[str], expected_digest: str | None
) -> None:
    """Refuse unless the registry's tags (``current``: tag -> digest, read just now) still hold
    what the inventory says: ``tag`` on ``expected_digest``, and exactly ``others`` with it. A
    difference is a push the inventory has not applied yet: deleting by digest would take a tag
    that nobody selected (a protected one, say) with it."""
    digest = current[tag]
    if digest != expected_digest:
        raise RegistryChanged(
            f"Tag {tag!r} points to {digest} in the registry now, not {expected_digest}: "
            "it moved since the plan."
        )
    on_digest = {name for name, found in current.items() if found == digest} - {tag}
    if on_digest != set(others):
        added, gone = sorted(on_digest - set(others)), sorted(set(others) - on_digest)
        changes = [f"{', '.join(added)} on it in the registry only"] if added else []
        changes += [f"{', '.join(gone)} no longer on it in the registry"] if gone else []
        raise RegistryChanged(
            f"The registry's tags on {digest} differ from the inventory's ({'; '.join(changes)}): "
            "nothing was deleted."
        )
