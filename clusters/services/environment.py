"""The cluster's agent environment: variables other parts of the platform publish to every job
on the cluster's hosted agents (the registries app publishes the registry's URL here).

What a job finally receives, with the platform's own variables, is
``clusters.selectors.agent_environment_for_queue``.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.signals import post_save

from clusters import locks
from clusters.models import AgentEnvironmentVariable, Cluster
from clusters.selectors import PLATFORM_VARIABLES, variable_reserved

logger = logging.getLogger("clusters.services")


def agent_environment_set(
    *, cluster: Cluster, name: str, value: str, source: str
) -> AgentEnvironmentVariable:
    """Publish ``name=value`` to every job on the cluster's hosted agents. Idempotent.

    A variable belongs to the ``source`` that first set it; another source may not overwrite it.
    Reserved names (``clusters.selectors.variable_reserved``: ``RESERVED_VARIABLES``,
    ``BUILDKITE_AGENT_*``, ``CONTROLPLANE_*``) are refused.
    """
    if name in PLATFORM_VARIABLES:
        raise ValidationError({"name": f"{name} is set by the platform for every job."})
    if variable_reserved(name):
        raise ValidationError({"name": f"{name} is reserved: jobs must not receive it from here."})
    if "\x00" in value:
        raise ValidationError({"value": "Must not contain NUL characters."})
    # The cluster is a row the caller holds, not input to look up.
    AgentEnvironmentVariable(cluster=cluster, name=name, value=value, source=source).full_clean(
        exclude=["cluster"], validate_unique=False, validate_constraints=False
    )
    # No savepoint: nothing in here fails but the database, and the caller's transaction is then
    # lost anyway. A variable of another source is refused once the block is left.
    with transaction.atomic(savepoint=False):
        variable, created, changed = locks.agent_environment_variable_upsert(
            cluster=cluster, name=name, value=value, source=source
        )
        if created or changed:  # written without save(): say so as a save would (hot caches)
            post_save.send(
                AgentEnvironmentVariable,
                instance=variable,
                created=created,
                raw=False,
                using=variable._state.db,
                update_fields=None if created else frozenset(["value", "updated_at"]),
            )
    if variable.source != source:
        raise ValidationError({"name": f"{name} is owned by the {variable.source!r} source."})
    logger.info(
        "agent_environment.set",
        extra={"cluster_id": str(cluster.pk), "variable": name, "source": source},
    )
    return variable


def agent_environment_unset(*, cluster: Cluster, name: str, source: str) -> bool:
    """Remove a variable that ``source`` set. Returns whether there was one."""
    deleted, _ = AgentEnvironmentVariable.objects.filter(
        cluster=cluster, name=name, source=source
    ).delete()
    return bool(deleted)
