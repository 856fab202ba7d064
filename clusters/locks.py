"""Row locks of the clusters app, taken in ONE order by every transaction.

The order, outermost first (``LOCK_ORDER``):

1. the organization (``organization_lock``): a webhook event or a new webhook secret;
2. the cluster (``cluster_lock``): creating, deleting or changing its queues, deleting it;
3. the queue (``queue_lock_or_raise``): changing or pausing it;
4. rows of other apps that belong to the cluster: the registries app's ``Registry`` (its
   ``locks.registry_lock_with_cluster`` takes the cluster here first);
5. the cluster's agent environment variable (``agent_environment_variable_lock``).

A transaction may skip a level but never goes back up: two transactions that take locks in
different orders can each wait for the other, and PostgreSQL then aborts one of them. The order
is not arbitrary. Provisioning a registry writes the cluster's agent environment while it holds
the registry row, and inserting or updating an agent environment variable takes a lock on its
cluster row (PostgreSQL's foreign key check, ``FOR KEY SHARE``). A cluster deletion holds the
cluster row and then reaches the registry (its ``cluster_deleted`` receiver). So the cluster row
comes before the registry, and the environment variable after both; provisioning that locked the
registry first deadlocked with a concurrent deletion (see docs/architecture.md, "Lock order",
and ``tests/registries/test_concurrency.py``). The webhook applies an organization's events one
at a time under its organization row, and then creates and deletes clusters and queues: so the
organization comes first.

Callers never write ``select_for_update`` themselves: they call these, so that every lock of
the app is here, next to the order it must follow. Each lock reads its one row without the
model's ordering: ordering a cluster by its organization's slug joined the organization, and
``FOR UPDATE`` then locked the organization row too (every provisioning of an organization
waited for the others). The hot ones are compiled once (``controlplane.compiled``).
"""

from __future__ import annotations

import uuid
from typing import Any

from clusters.models import AgentEnvironmentVariable, Cluster, Organization, Queue
from controlplane.compiled import CompiledSelect

#: The rows a transaction may lock, outermost first (``app_label.Model``).
LOCK_ORDER = (
    "clusters.Organization",
    "clusters.Cluster",
    "clusters.Queue",
    "registries.Registry",
    "clusters.AgentEnvironmentVariable",
)

Pk = uuid.UUID | str


def organization_lock(pk: int) -> Organization | None:
    """Lock the organization row (first in the order); None if there is none."""
    return Organization.objects.select_for_update().filter(pk=pk).first()


_cluster_lock = CompiledSelect(
    Cluster, lambda pk: Cluster.objects.select_for_update().filter(pk=pk).order_by()[:1], "id"
)


def cluster_lock(pk: Pk) -> Cluster | None:
    """Lock the cluster row (after its organization); None if it is gone."""
    found = _cluster_lock(pk)
    return found[0] if found else None


def cluster_lock_or_raise(pk: Pk) -> Cluster:
    """Lock the cluster row; raises ``Cluster.DoesNotExist`` if it is gone (the API answers
    404: it was deleted by another request meanwhile)."""
    return Cluster.objects.select_for_update().get(pk=pk)


def queue_lock_or_raise(pk: Pk) -> Queue:
    """Lock the queue row (after its cluster, if the transaction takes that too); raises
    ``Queue.DoesNotExist`` if it is gone (the API answers 404)."""
    return Queue.objects.select_for_update().get(pk=pk)


_variable_lock = CompiledSelect(
    AgentEnvironmentVariable,
    lambda cluster, name: (
        AgentEnvironmentVariable.objects.select_for_update()
        .filter(cluster=cluster, name=name)
        .order_by()
    ),
    "cluster",
    "name",
)


def agent_environment_variable_lock(
    *, cluster: Cluster, name: str, defaults: dict[str, Any]
) -> tuple[AgentEnvironmentVariable, bool]:
    """Lock the cluster's variable ``name`` (last in the order), created with ``defaults`` if
    there is none; and whether it was created. Two statements either way: ``INSERT ... ON
    CONFLICT DO NOTHING`` (a concurrent insert is no error, so no savepoint is needed), then the
    row locked. Inserted rows send no ``post_save``: the caller announces a creation."""
    new = AgentEnvironmentVariable(cluster=cluster, name=name, **defaults)
    AgentEnvironmentVariable.objects.bulk_create([new], ignore_conflicts=True)
    found = _variable_lock(cluster.pk, name)  # (cluster, name) is unique
    if not found:  # deleted since the insert found it: as get() says
        raise AgentEnvironmentVariable.DoesNotExist(f"No variable {name} on cluster {cluster.pk}")
    variable = found[0]
    # Ours if it is what was inserted: its creation time is of this call, to the microsecond.
    created = (variable.created_at, variable.source, variable.value) == (
        new.created_at,
        new.source,
        new.value,
    )
    return variable, created
