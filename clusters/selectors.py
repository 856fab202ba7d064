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

#: Names no source may publish into a job environment, and that are never served whatever the
#: database holds: those buildkite-agent protects from job environments (its env/protected.go),
#: those that change how processes and shells run, and those through which the agent hook hands
#: a job its registry credential (``DOCKER_CONFIG``, ``REGISTRY_AUTH_FILE``).
RESERVED_VARIABLES = frozenset(
    {
        "BUILDKITE_BIN_PATH",
        "BUILDKITE_BUILD_PATH",
        "BUILDKITE_COMMAND_EVAL",
        "BUILDKITE_CONFIG_PATH",
        "BUILDKITE_GIT_MIRRORS_PATH",
        "BUILDKITE_HOOKS_PATH",
        "BUILDKITE_LOCAL_HOOKS_ENABLED",
        "BUILDKITE_PLUGINS_ENABLED",
        "BUILDKITE_PLUGINS_PATH",
        "BUILDKITE_SHELL",
        "BASH_ENV",
        "BASHOPTS",
        "CDPATH",
        "DOCKER_CONFIG",
        "ENV",
        "GLOBIGNORE",
        "HOME",
        "IFS",
        "LD_AUDIT",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "PATH",
        "PROMPT_COMMAND",
        "PS4",
        "REGISTRY_AUTH_FILE",
        "SHELL",
        "SHELLOPTS",
    }
)
#: Whole families of reserved names: the agent's own (its access token among them) and the
#: hook's configuration (the cluster agent token among it).
RESERVED_PREFIXES = ("BUILDKITE_AGENT_", "CONTROLPLANE_")


def variable_reserved(name: str) -> bool:
    """Whether a job must never receive ``name`` from the cluster's agent environment."""
    return name in RESERVED_VARIABLES or name.startswith(RESERVED_PREFIXES)


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
        # A stored row never stands in for a platform variable, nor claims the platform as its
        # source (``agent_environment_set`` refuses both; rows can arrive another way).
        entries += [
            EnvironmentEntry(
                variable.name,
                variable.value,
                variable.source if variable.source != PLATFORM_SOURCE else "stored",
            )
            for variable in AgentEnvironmentVariable.objects.filter(cluster=cluster)
            if variable.name not in PLATFORM_VARIABLES
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
