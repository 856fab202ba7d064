"""The registries app's audit rows (``clusters.interface.audit_record``): a registry's under its
cluster's organization, an operator's change to the platform (backends, signing keys) under
none."""

from __future__ import annotations

from typing import Any

from clusters.interface import Cluster, audit_record
from registries.models import Registry


def registry_audit(registry: Registry, type: str, data: dict[str, Any] | None = None) -> None:
    """Record ``type`` about ``registry`` (subject ``REGISTRY``, its id; named by its
    namespace) under its cluster's organization: the cluster the caller holds, or read by its
    id; None for a registry whose cluster was deleted."""
    organization_id = None
    if registry.cluster_id is not None:
        if Registry.cluster.is_cached(registry) and registry.cluster is not None:
            organization_id = registry.cluster.organization_id
        else:
            organization_id = (
                Cluster.objects.filter(pk=registry.cluster_id)
                .values_list("organization_id", flat=True)
                .first()
            )
    audit_record(
        type=type,
        organization=organization_id,
        subject_type="REGISTRY",
        subject_uuid=registry.pk,
        subject_name=registry.namespace,
        data=data,
    )


def platform_audit(type: str, subject_type: str, subject: str, data: dict[str, Any]) -> None:
    """Record an operator's change to the platform itself (no organization's)."""
    audit_record(
        type=type,
        organization=None,
        subject_type=subject_type,
        subject_uuid=subject,
        subject_name=subject,
        data=data,
    )
