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
    agent environment, the registry token principal) goes as soon as it changes here."""
    from clusters.models import AgentEnvironmentVariable, Cluster, ClusterAgentToken, Queue
    from controlplane.hotcache import invalidate_on_change, row_tag, secret_tag

    def of_cluster(row: Queue | AgentEnvironmentVariable) -> list[str]:
        return [row_tag(Cluster, row.cluster_id)]

    def of_token(token: ClusterAgentToken) -> list[str]:
        return [row_tag(ClusterAgentToken, token.pk), secret_tag(token.token_hash)]

    invalidate_on_change(Cluster, lambda cluster: [row_tag(Cluster, cluster.pk)], name="cluster")
    invalidate_on_change(Queue, of_cluster, name="queue")
    invalidate_on_change(AgentEnvironmentVariable, of_cluster, name="agent_environment")
    invalidate_on_change(ClusterAgentToken, of_token, name="agent_token")
