"""Writes to organizations, clusters, queues, agent tokens and the agent environment.

Every entry point (API, admin, webhook, demo, management commands) creates and changes these
through the functions here, never by saving models itself, so that the checks and the signals
happen once, in one place. One module per sub-domain; callers import from the package:

- ``clusters``: organizations and clusters;
- ``queues``: queues, their shapes and pausing dispatch;
- ``credentials``: agent tokens, API access tokens, and what every issued secret shares;
- ``environment``: the cluster's agent environment, which other apps publish to;
- ``audit``: the audit log row every write above (and every write of the other apps) makes.

The webhook's services are in ``clusters.webhooks``. Row locks are taken through
``clusters.locks``, in its one order.
"""

from clusters.services.audit import audit_prune, audit_record, changes, snapshot
from clusters.services.clusters import (
    UNSET,
    cluster_create,
    cluster_delete,
    cluster_update,
    organization_create,
    organization_get_or_create,
)
from clusters.services.credentials import (
    AGENT_TOKEN_PREFIX,
    API_TOKEN_PREFIX,
    agent_token_create,
    agent_token_revoke,
    agent_token_update,
    api_token_create,
    api_token_revoke,
)
from clusters.services.environment import agent_environment_set, agent_environment_unset
from clusters.services.queues import (
    queue_create,
    queue_delete,
    queue_pause_dispatch,
    queue_resume_dispatch,
    queue_shape_change_error,
    queue_update,
)

__all__ = [
    "audit_prune",
    "audit_record",
    "changes",
    "snapshot",
    "AGENT_TOKEN_PREFIX",
    "API_TOKEN_PREFIX",
    "UNSET",
    "agent_environment_set",
    "agent_environment_unset",
    "agent_token_create",
    "agent_token_revoke",
    "agent_token_update",
    "api_token_create",
    "api_token_revoke",
    "cluster_create",
    "cluster_delete",
    "cluster_update",
    "organization_create",
    "organization_get_or_create",
    "queue_create",
    "queue_delete",
    "queue_pause_dispatch",
    "queue_resume_dispatch",
    "queue_shape_change_error",
    "queue_update",
]
