"""Receivers for the facts the clusters app announces. Connected in ``RegistriesConfig.ready``."""

from __future__ import annotations

from typing import Any

from clusters.interface import Cluster
from registries.services import registry_create_for_cluster, registry_deprovision_start


def on_first_hosted_queue_created(sender: Any, *, cluster: Cluster, **kwargs: Any) -> None:
    """The cluster's first hosted queue exists: the cluster is owed a registry."""
    registry_create_for_cluster(cluster=cluster)


def on_cluster_deleted(sender: Any, *, cluster: Cluster, **kwargs: Any) -> None:
    """The cluster is going: its registry starts deprovisioning and lets go of it."""
    registry = getattr(cluster, "registry", None)
    if registry is not None:
        registry_deprovision_start(
            registry=registry,
            reason=f"cluster {cluster.name!r} ({cluster.pk}) deleted",
            detach=True,
        )
