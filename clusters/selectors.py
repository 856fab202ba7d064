"""Reads that are more than a filter: agent and API token authentication and the job
environment."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.db.models import F, FilteredRelation, Model, Q

from clusters.models import (
    AgentEnvironmentVariable,
    ApiToken,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
)
from controlplane import hotcache
from controlplane.compiled import from_db

M = TypeVar("M", bound=Model)

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


#: Variables without which a hosted queue's environment is not complete yet: its jobs get the
#: answer, but it is never cached (``clusters.agent.views``), so the next request sees the
#: registry once it is ready. Published by the registries app (``registries.models``).
HOSTED_ENVIRONMENT_REQUIRED = frozenset({"BUILDKITE_HOSTED_REGISTRY_URL"})

#: Where ``agent_queue_lookup`` puts the cluster's published variables, read in the same query
#: (as ``Prefetch(to_attr=...)`` would), so that ``agent_environment_for_queue`` reads no more.
PUBLISHED_VARIABLES = "published_variables"


@dataclass(frozen=True)
class EnvironmentEntry:
    name: str
    value: str
    source: str


@dataclass(frozen=True)
class AgentTokenFacts:
    """What the hot paths need of an active agent token, read once and kept (``hotcache``): who
    it is, its cluster, where it may be used from, and until when."""

    pk: uuid.UUID
    cluster_id: uuid.UUID
    allowed_ip_addresses: str
    expires_at: datetime | None


@dataclass(frozen=True)
class AgentQueueLookup:
    """An active agent token and the queue of its cluster an agent asked for (None when the
    cluster has none by that key, or no default queue), with the cluster and its published
    variables loaded."""

    token: AgentTokenFacts
    queue: Queue | None


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


def agent_queue_lookup(*, token_hash: str, queue_key: str) -> AgentQueueLookup | None:
    """The active agent token whose secret hashes to ``token_hash``, and its cluster's queue
    ``queue_key`` (the cluster's default queue when ``queue_key`` is ""), with the cluster's
    published variables: one query (a row per variable). None when no active token has that
    hash."""
    if queue_key:
        condition = Q(cluster__queues__key=queue_key)
    else:
        condition = Q(cluster__queues__pk=F("cluster__default_queue_id"))
    rows = list(
        ClusterAgentToken.objects.active()
        .filter(token_hash=token_hash)
        .annotate(found=FilteredRelation("cluster__queues", condition=condition))
        .values_list(
            "pk",
            "allowed_ip_addresses",
            "expires_at",
            "cluster_id",
            "cluster__organization_id",
            "cluster__name",
            "cluster__default_queue_id",
            "found__id",
            "found__key",
            "found__instance_shape",
            "cluster__environment__name",
            "cluster__environment__value",
            "cluster__environment__source",
        )
        .order_by()
    )
    if not rows:
        return None
    token_id, allowed, expires_at, cluster_id, organization_id, name, default_queue_id = rows[0][:7]
    token = AgentTokenFacts(token_id, cluster_id, allowed, expires_at)
    queue_id, key, instance_shape = rows[0][7:10]
    if queue_id is None:
        return AgentQueueLookup(token, None)
    cluster = Cluster(
        id=cluster_id,
        organization_id=organization_id,
        name=name,
        default_queue_id=default_queue_id,
    )
    setattr(
        cluster,
        PUBLISHED_VARIABLES,
        [
            AgentEnvironmentVariable(cluster=cluster, name=var, value=value, source=source)
            for *_, var, value, source in rows
            if var is not None
        ],
    )
    queue = Queue(id=queue_id, cluster=cluster, key=key, instance_shape=instance_shape)
    return AgentQueueLookup(token, queue)


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
        variables = getattr(cluster, PUBLISHED_VARIABLES, None)
        if variables is None:
            variables = AgentEnvironmentVariable.objects.filter(cluster=cluster)
        # A stored row never stands in for a platform variable, nor claims the platform as its
        # source (``agent_environment_set`` refuses both; rows can arrive another way).
        entries += [
            EnvironmentEntry(
                variable.name,
                variable.value,
                variable.source if variable.source != PLATFORM_SOURCE else "stored",
            )
            for variable in variables
            if variable.name not in PLATFORM_VARIABLES
        ]
    return sorted(entries, key=lambda entry: entry.name)


#: A model instance as read: its database alias, its concrete fields' attribute names and values.
_Row = tuple[str | None, tuple[str, ...], tuple[Any, ...]]


#: Active API tokens by the hash of their secret: each a token, its user and its organization
#: as ``from_db`` takes them back (``controlplane.hotcache``; docs/api.md, "Tokens and scopes").
_API_TOKENS: hotcache.HotCache[tuple[_Row, _Row, _Row]] = hotcache.HotCache("api-tokens")


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The active API token whose secret this is, with its user and organization, or None.

    Kept per process for ``HOT_CACHE_SECONDS`` at most (a warm call reads no database), and
    dropped at once in this process when the token, its user or its organization is saved or
    deleted, or the token revoked (``clusters.apps``, ``revoke_once``). Each call gets instances
    of its own."""
    if not secret:
        return None
    hashed = ApiToken.hash_secret(secret)
    rows = _API_TOKENS.get(hashed)
    if rows is not None:
        return _api_token_from(rows)
    since = hotcache.fill_started()
    token = (
        ApiToken.objects.active()
        .select_related("user", "organization")
        .filter(token_hash=hashed, user__is_active=True)
        .first()
    )
    if token is not None:
        tags = (
            hotcache.row_tag(ApiToken, token.pk),
            hotcache.row_tag(User, token.user_id),
            hotcache.row_tag(Organization, token.organization_id),
            hotcache.secret_tag(hashed),
        )
        rows = (_row(token), _row(token.user), _row(token.organization))
        _API_TOKENS.put(hashed, rows, since=since, tags=tags)
    return token


def _row(instance: Model) -> _Row:
    names = tuple(field.attname for field in instance._meta.concrete_fields)
    return instance._state.db, names, tuple(_copied(getattr(instance, name)) for name in names)


def _instance(model: type[M], row: _Row) -> M:
    db, names, values = row
    return from_db(model, db, names, [_copied(value) for value in values])


def _copied(value: Any) -> Any:
    """``value``, or a copy of it where it could be changed in place (a JSON field's list)."""
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


def _api_token_from(rows: tuple[_Row, _Row, _Row]) -> ApiToken:
    token = _instance(ApiToken, rows[0])
    token.user = _instance(User, rows[1])
    token.organization = _instance(Organization, rows[2])
    return token
