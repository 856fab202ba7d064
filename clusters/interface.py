"""The seam: the public surface of the clusters app, and the ONLY clusters module that other apps
(today: registries) may import. An import-linter contract (``pyproject.toml``, "registries
imports clusters only through clusters.interface") fails on any other import.

Everything here is something registries needs from clusters, and nothing more:

- the models it refers to, reads or filters by (``Organization``: its registry quotas;
  ``Cluster``, ``Queue``, ``ClusterAgentToken``, ``AgentEnvironmentVariable``) and the API
  scopes its REST views declare (``ApiScope``);
- the facts clusters announces (``first_hosted_queue_created``, ``cluster_deleted``), which
  registries receives (connected in ``RegistriesConfig.ready``);
- the only ways registries writes into clusters: the agent environment
  (``agent_environment_set``, ``agent_environment_unset``), and the services the ``demo``
  command drives as a user would (``organization_get_or_create``, ``cluster_create``,
  ``agent_token_create``, ``queue_create``);
- how an agent token's secret is checked (``agent_token_authenticate``: the registry token
  endpoint accepts agent tokens), what the hot paths keep of one (``AgentTokenFacts``), and
  where the token may be used from: its IP allow-list (``agent_token_check_address(token,
  request)`` raises the agent endpoint's 403 naming the address), so that every endpoint that
  accepts the token, or a credential made from it, applies the same rule;
- how agents authenticate (``ClusterAgentTokenAuthentication``: the agent endpoint that hands a
  job its registry credential accepts the agent token exactly as the agent environment endpoint
  does);
- the audit log: ``audit_record`` (every registries write records its row through it, in its
  transaction) and who the writes are attributed to (``acting_as``, ``Actor``, ``ActorType``,
  ``AuditContext``) for registries' own entry points, and the base of the commands that write
  (``AuditedCommand``: a command's writes are recorded as its own);
- the cluster row lock (``cluster_lock``), so registries takes it in the order
  ``clusters.locks`` documents;
- what registries extends: the console's ``ClusterAdmin`` (registries adds the registry badge)
  and the REST API's base views (``OrganizationAPIView``; ``OperatorAPIView`` for the
  operators' registry backends endpoints, with the operators' ``ApiScope`` values).

Adding a name here is a design decision, not a convenience: it widens what clusters promises to
keep, and what registries may depend on. Prefer a signal (a fact clusters announces) to a new
call into clusters. The clusters app keeps every name importable from where it is imported here.
"""

from typing import TYPE_CHECKING, Any

from clusters.actors import AuditedCommand
from clusters.audit import Actor, ActorType, AuditContext, acting_as
from clusters.locks import cluster_lock
from clusters.models import (
    AgentEnvironmentVariable,
    ApiScope,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
)
from clusters.selectors import AgentTokenFacts, agent_token_authenticate
from clusters.services import (
    agent_environment_set,
    agent_environment_unset,
    agent_token_create,
    audit_record,
    changes,
    cluster_create,
    organization_get_or_create,
    queue_create,
    snapshot,
)
from clusters.signals import cluster_deleted, first_hosted_queue_created

if TYPE_CHECKING:
    from clusters.admin import ClusterAdmin
    from clusters.agent.authentication import (
        AddressNotAllowed,
        ClusterAgentTokenAuthentication,
        agent_token_check_address,
    )
    from clusters.api.base import OperatorAPIView, OrganizationAPIView


_AGENT_AUTHENTICATION = {
    "AddressNotAllowed",
    "ClusterAgentTokenAuthentication",
    "agent_token_check_address",
}


def __getattr__(name: str) -> Any:
    """The console's and the web layer's names, imported when first asked for.

    ``registries.models`` imports this module while Django loads the apps' models; importing the
    admin or the REST framework's views then would run the console's registrations during app
    loading and load them into every worker. So they come from here on first use instead.
    """
    if name == "ClusterAdmin":
        from clusters.admin import ClusterAdmin

        return ClusterAdmin
    if name == "OrganizationAPIView":
        from clusters.api.base import OrganizationAPIView

        return OrganizationAPIView
    if name == "OperatorAPIView":
        from clusters.api.base import OperatorAPIView

        return OperatorAPIView
    if name in _AGENT_AUTHENTICATION:
        from clusters.agent import authentication

        return getattr(authentication, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuditedCommand",
    "Actor",
    "ActorType",
    "AddressNotAllowed",
    "AgentEnvironmentVariable",
    "AgentTokenFacts",
    "ApiScope",
    "AuditContext",
    "Cluster",
    "ClusterAdmin",
    "ClusterAgentToken",
    "ClusterAgentTokenAuthentication",
    "OperatorAPIView",
    "Organization",
    "OrganizationAPIView",
    "Queue",
    "acting_as",
    "agent_environment_set",
    "agent_environment_unset",
    "agent_token_authenticate",
    "agent_token_check_address",
    "agent_token_create",
    "audit_record",
    "changes",
    "cluster_create",
    "cluster_deleted",
    "cluster_lock",
    "first_hosted_queue_created",
    "organization_get_or_create",
    "queue_create",
    "snapshot",
]
