"""What the REST API reads and writes, in Buildkite's shapes (its REST API for clusters, queues,
cluster agent tokens, the caller's organization and access token; see docs/api.md). One module
per resource; callers import from here.

Output serializers say what a response holds, field by field; input serializers say what a
request may send. Writes go through ``clusters.services``; these only validate and shape.
Timestamps are ISO 8601 UTC with milliseconds (``2023-05-03T04:17:55.867Z``); ``graphql_id``
is base64 of ``<Type>---<uuid>``, as Buildkite's are.
"""

from clusters.api.serializers.agent_tokens import (
    AgentTokenCreatedSerializer,
    AgentTokenCreateSerializer,
    AgentTokenSerializer,
    AgentTokenUpdateSerializer,
)
from clusters.api.serializers.clusters import (
    ClusterCreateSerializer,
    ClusterSerializer,
    ClusterUpdateSerializer,
)
from clusters.api.serializers.common import UserSerializer, absolute, blank_nulls, graphql_id
from clusters.api.serializers.organizations import AccessTokenSerializer, OrganizationSerializer
from clusters.api.serializers.queues import (
    QueueCreateSerializer,
    QueueEnvironmentSerializer,
    QueuePauseDispatchSerializer,
    QueueReferenceSerializer,
    QueueSerializer,
    QueueUpdateSerializer,
)

__all__ = [
    "AccessTokenSerializer",
    "AgentTokenCreateSerializer",
    "AgentTokenCreatedSerializer",
    "AgentTokenSerializer",
    "AgentTokenUpdateSerializer",
    "ClusterCreateSerializer",
    "ClusterSerializer",
    "ClusterUpdateSerializer",
    "OrganizationSerializer",
    "QueueCreateSerializer",
    "QueueEnvironmentSerializer",
    "QueuePauseDispatchSerializer",
    "QueueReferenceSerializer",
    "QueueSerializer",
    "QueueUpdateSerializer",
    "UserSerializer",
    "absolute",
    "blank_nulls",
    "graphql_id",
]
