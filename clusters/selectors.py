"""Reads that are more than a filter: agent authentication and the job environment."""

from __future__ import annotations

from dataclasses import dataclass

from clusters.models import AgentEnvironmentVariable, ApiToken, ClusterAgentToken, Queue

#: Variables the platform computes for every job; no source may set them.
PLATFORM_VARIABLES = frozenset(
    {
        "BUILDKITE_COMPUTE_TYPE",
        "BUILDKITE_CLUSTER_ID",
        "BUILDKITE_CLUSTER_NAME",
        "BUILDKITE_AGENT_META_DATA_QUEUE",
    }
)
PLATFORM_SOURCE = "platform"


@dataclass(frozen=True)
class EnvironmentEntry:
    name: str
    value: str
    source: str


def agent_token_authenticate(secret: str) -> ClusterAgentToken | None:
    """The active token whose secret this is, with its cluster and organization, or None."""
    if not secret:
        return None
    return (
        ClusterAgentToken.objects.active()
        .select_related("cluster__organization")
        .filter(token_hash=ClusterAgentToken.hash_secret(secret))
        .first()
    )


def agent_environment_for_queue(*, queue: Queue) -> list[EnvironmentEntry]:
    """The variables a job on ``queue`` receives, sorted by name.

    Every job gets the platform's cluster variables. Jobs on hosted queues also get the
    cluster's published variables (such as ``BUILDKITE_HOSTED_REGISTRY_URL``): they describe the
    hosted environment, which self-hosted agents are not part of.
    """
    cluster = queue.cluster
    entries = [
        EnvironmentEntry(
            "BUILDKITE_COMPUTE_TYPE", "hosted" if queue.hosted else "self-hosted", PLATFORM_SOURCE
        ),
        EnvironmentEntry("BUILDKITE_CLUSTER_ID", str(cluster.pk), PLATFORM_SOURCE),
        EnvironmentEntry("BUILDKITE_CLUSTER_NAME", cluster.name, PLATFORM_SOURCE),
        EnvironmentEntry("BUILDKITE_AGENT_META_DATA_QUEUE", queue.key, PLATFORM_SOURCE),
    ]
    if queue.hosted:
        entries += [
            EnvironmentEntry(variable.name, variable.value, variable.source)
            for variable in AgentEnvironmentVariable.objects.filter(cluster=cluster)
        ]
    return sorted(entries, key=lambda entry: entry.name)


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The active API token whose secret this is, with its user and organization, or None."""
    if not secret:
        return None
    return (
        ApiToken.objects.active()
        .select_related("user", "organization")
        .filter(token_hash=ApiToken.hash_secret(secret), user__is_active=True)
        .first()
    )
