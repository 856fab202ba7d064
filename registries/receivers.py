"""Receivers for the facts the clusters app announces. Connected in ``RegistriesConfig.ready``."""

from __future__ import annotations

from typing import Any

from clusters.models import Cluster
from registries.services import registry_create_for_cluster


def on_first_hosted_queue_created(sender: Any, *, cluster: Cluster, **kwargs: Any) -> None:
    """The cluster's first hosted queue exists: the cluster is owed a registry."""
    registry_create_for_cluster(cluster=cluster)
