"""The REST API under ``/v2/organizations/<org_slug>/`` (Buildkite's paths, no trailing slash)."""

from django.urls import path

from clusters.api.views import (
    AgentTokenDetailView,
    AgentTokenListView,
    ClusterDetailView,
    ClusterListView,
    QueueDetailView,
    QueueEnvironmentView,
    QueueListView,
    QueuePauseDispatchView,
    QueueResumeDispatchView,
)

app_name = "api"

CLUSTER = "clusters/<str:cluster_id>"
QUEUE = f"{CLUSTER}/queues/<str:queue_id>"

urlpatterns = [
    path("clusters", ClusterListView.as_view(), name="clusters"),
    path(CLUSTER, ClusterDetailView.as_view(), name="cluster"),
    path(f"{CLUSTER}/queues", QueueListView.as_view(), name="queues"),
    path(QUEUE, QueueDetailView.as_view(), name="queue"),
    path(f"{QUEUE}/pause_dispatch", QueuePauseDispatchView.as_view(), name="queue-pause"),
    path(f"{QUEUE}/resume_dispatch", QueueResumeDispatchView.as_view(), name="queue-resume"),
    path(f"{QUEUE}/environment", QueueEnvironmentView.as_view(), name="queue-environment"),
    path(f"{CLUSTER}/tokens", AgentTokenListView.as_view(), name="tokens"),
    path(f"{CLUSTER}/tokens/<str:token_id>", AgentTokenDetailView.as_view(), name="token"),
]
