"""Reads the maintenance window decides on (docs/retention.md#untagged-manifests): whether a
backend's garbage collection may delete untagged manifests.

``garbage-collect --delete-untagged`` deletes every manifest no tag points to. Distribution 2.8
decides that per manifest before following indexes, so the members of a tagged image index
(multi-platform images: each platform's manifest is untagged) are deleted with their layers,
and the index no longer pulls (distribution#3004, distribution#3178; fixed only in
Distribution 3). It is therefore used only where the backend's storage holds no tagged
index (read from the storage: filesystem only), and where every registry's owner asked for
untagged manifests to go.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings

from registries.drivers.storage import TaggedManifest, storage_root, tagged_manifests
from registries.models import Registry, State
from registries.retention import policies_for

DISTRIBUTION_ISSUES = "distribution#3004, distribution#3178"


#: A registry of the backend (not deleted): its id, namespace, cluster and organization.
Row = tuple[UUID, str, UUID, int]


def _tagged_index(config_path: str | None) -> tuple[TaggedManifest | None, str]:
    """A tag of the storage on an index (or on a manifest whose type cannot be told), read from
    the storage itself; else None, or, where the storage cannot be walked from here, None and
    why untagged manifests are kept."""
    if not config_path:
        return None, (
            "no registry configuration to read the backend's storage from (REGISTRY_GC_CONFIG "
            "or the backend's gc_config): whether it holds a tagged image index cannot be "
            "checked, so untagged manifests are kept"
        )
    root = storage_root(config_path)
    if root is None:
        return None, (
            "the backend's storage is not filesystem storage (S3 or another driver): its tags "
            "cannot be walked from here to check for tagged image indexes, so untagged "
            "manifests are kept"
        )
    found = next((tag for tag in tagged_manifests(root) if tag.maybe_index), None)
    return found, ""


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
    why (recorded on the collection): False when ``REGISTRY_GC_DELETE_UNTAGGED`` is off, when
    the storage of ``config_path`` (the configuration garbage-collect runs on) cannot be walked
    from here (none given, S3 or another driver), when a tag in it points to an image index (or
    to a manifest whose type cannot be told), or when the retention policy of a registry of the
    backend (any state but deleted: a failed or suspended one still has its images in the
    storage) does not delete untagged manifests; True otherwise.

    Read from the storage, not the event-fed inventory (an index pushed just before the window
    may not be in it yet; events are lost when a runner restarts), and while the replicas are
    read-only, so that what it reads is what garbage-collect sees.
    """
    if not settings.REGISTRY_GC_DELETE_UNTAGGED:
        return False, "REGISTRY_GC_DELETE_UNTAGGED is off: untagged manifests are kept"
    tag, unwalkable = _tagged_index(config_path)
    if unwalkable:
        return False, unwalkable
    if tag is not None:
        return False, (
            f"{tag.repository}:{tag.tag} is a tagged image index (or of a type not yet "
            "known): Distribution 2.8's garbage-collect --delete-untagged deletes the members "
            f"of tagged indexes, which then no longer pull ({DISTRIBUTION_ISSUES}; fixed in "
            "Distribution 3), so untagged manifests are kept"
        )
    rows = list(
        Registry.objects.filter(backend_id=backend_id)
        .exclude(state=State.DELETED)
        .order_by("namespace")
        .values_list("pk", "namespace", "cluster_id", "cluster__organization_id")
    )
    # One being deprovisioned may have lost its cluster, and with it its policy: it keeps.
    clustered: list[Row] = [row for row in rows if row[2] is not None]
    orphans = [row[1] for row in rows if row[2] is None]
    keeping = sorted(orphans + _policies_keeping_untagged(clustered))
    if keeping:
        more = f" and {len(keeping) - 3} more" if len(keeping) > 3 else ""
        return False, (
            f"the retention policy of {', '.join(keeping[:3])}{more} does not delete untagged "
            "manifests, so they are kept"
        )
    return True, (
        f"safe: no tagged image index in the backend's storage, and the retention policy of "
        f"every one of its {len(rows)} registries deletes untagged manifests"
    )
