from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "clusters"
    verbose_name = "Clusters"

    def ready(self) -> None:
        from clusters import checks

        checks.register()
        _invalidate_hot_caches_on_change()


def _invalidate_hot_caches_on_change() -> None:
    """What the hot paths cache of a token, a queue or a cluster (``controlplane.hotcache``: the
    agent environment, the registry token principal, the REST API's tokens) goes as soon as it
    changes here."""
    from django.contrib.auth.models import User

    from clusters.models import (
        AgentEnvironmentVariable,
        ApiToken,
        Cluster,
        ClusterAgentToken,
        Organization,
        Queue,
    )
    from controlplane.hotcache import invalidate_on_change, row_tag, secret_tag

    def of_cluster(row: Queue | AgentEnvironmentVariable) -> list[str]:
        return [row_tag(Cluster, row.cluster_id)]

    def of_token(token: ClusterAgentToken) -> list[str]:
        return [row_tag(ClusterAgentToken, token.pk), secret_tag(token.token_hash)]

    invalidate_on_change(Cluster, lambda cluster: [row_tag(Cluster, cluster.pk)], name="cluster")
    invalidate_on_change(Queue, of_cluster, name="queue")
    invalidate_on_change(AgentEnvironmentVariable, of_cluster, name="agent_environment")
    invalidate_on_change(ClusterAgentToken, of_token, name="agent_token")
    # An API token answers with its user and organization: any of the three changing drops it.
    invalidate_on_change(
        ApiToken,
        lambda token: [row_tag(ApiToken, token.pk), secret_tag(token.token_hash)],
        name="api_token",
    )
    invalidate_on_change(User, lambda user: [row_tag(User, user.pk)], name="user")
    invalidate_on_change(
        Organization, lambda organization: [row_tag(Organization, organization.pk)], name="org"
    )
