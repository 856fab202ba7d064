"""Reads the maintenance window decides on (docs/retention.md#untagged-manifests): whether a
backend's garbage collection may delete untagged manifests.

``garbage-collect --delete-untagged`` deletes every manifest no tag points to. Distribution 2.8
decides that per manifest before following indexes, so the members of a tagged image index
(multi-platform images: each platform's manifest is untagged) are deleted with their layers,
and the index no longer pulls (distribution#3004, distribution#3178; fixed only in
Distribution 3). It is therefore used only where no registry of the backend holds a tagged
index, and where every registry's owner asked for untagged manifests to go.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.db.models import Exists, OuterRef, Q

from registries.inventory import INDEX_MEDIA_TYPES, Manifest, Tag
from registries.models import Registry
from registries.retention import policies_for

DISTRIBUTION_ISSUES = "distribution#3004, distribution#3178"


#: A ready registry of the backend: its id, namespace, cluster and organization.
Row = tuple[UUID, str, UUID, int]


def _tagged_index(rows: list[Row]) -> Tag | None:
    """A tag of one of the registries on an index, or on a manifest whose media type the
    inventory does not know (it might be one)."""
    index_or_unknown = Manifest.objects.filter(
        Q(media_type__in=INDEX_MEDIA_TYPES) | Q(media_type=""),
        registry_id=OuterRef("repository__registry_id"),
        digest=OuterRef("digest"),
    )
    return (
        Tag.objects.filter(repository__registry_id__in=[row[0] for row in rows])
        .filter(Exists(index_or_unknown))
        .select_related("repository")
        .order_by("repository__name", "name")
        .first()
    )


def _policies_keeping_untagged(rows: list[Row]) -> list[str]:
    """The namespaces whose effective retention policy keeps untagged manifests: the cluster's
    override, else its organization's default, else none (keep), as ``retention.policy_for``
    finds it for one cluster, here in one query for the whole backend (``policies_for``). A
    disabled policy keeps everything (it deletes nothing)."""
    policies = policies_for((row[2], row[3]) for row in rows)
    keeping = []
    for _, namespace, cluster_id, _ in rows:
        policy, _ = policies[cluster_id]
        if policy is None or not policy.enabled or not policy.delete_untagged:
            keeping.append(namespace)
    return keeping


def delete_untagged_decision(
    backend_id: int, *, config_path: str | None = None
) -> tuple[bool, str]:
    """Whether the collection on ``backend_id`` runs ``garbage-collect --delete-untagged``, and
    why (recorded on the collection): False when ``REGISTRY_GC_DELETE_UNTAGGED`` is off, when a
    ready registry of the backend has a tagged image index in its inventory, or when a ready
    registry's retention policy does not delete untagged manifests; True otherwise.

    Read once pushes are refused (the window's draining), so that no index arrives after it.
    """
    if not settings.REGISTRY_GC_DELETE_UNTAGGED:
        return False, "REGISTRY_GC_DELETE_UNTAGGED is off: untagged manifests are kept"
    rows: list[Row] = list(
        Registry.objects.ready()
        .filter(backend_id=backend_id, cluster__isnull=False)
        .order_by("namespace")
        .values_list("pk", "namespace", "cluster_id", "cluster__organization_id")
    )
    tag = _tagged_index(rows)
    if tag is not None:
        return False, (
            f"{tag.repository.name}:{tag.name} is a tagged image index (or of a type not yet "
            "known): Distribution 2.8's garbage-collect --delete-untagged deletes the members "
            f"of tagged indexes, which then no longer pull ({DISTRIBUTION_ISSUES}; fixed in "
            "Distribution 3), so untagged manifests are kept"
        )
    keeping = _policies_keeping_untagged(rows)
    if keeping:
        more = f" and {len(keeping) - 3} more" if len(keeping) > 3 else ""
        return False, (
            f"the retention policy of {', '.join(keeping[:3])}{more} does not delete untagged "
            "manifests, so they are kept"
        )
    return True, (
        f"safe: no tagged image index on the backend's {len(rows)} ready registries, and "
        "every one's retention policy deletes untagged manifests"
    )
