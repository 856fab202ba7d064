"""The REST API's clusters routes, in Buildkite's paths (no trailing slash): the calling token
(``/v2/access-token``), and under ``/v2/organizations/<org_slug>`` the organization itself and
everything in it. The paths are written out in full (this is included at the root) because the
organization's own path has no trailing slash."""

from django.urls import path

from clusters.api.audit_events import AuditEventDetailView, AuditEventListView
from clusters.api.views import (
    AccessTokenView,
    AgentTokenDetailView,
    AgentTokenListView,
    ClusterDetailView,
    ClusterListView,
    OrganizationView,
    QueueDetailView,
    QueueEnvironmentView,
    QueueListView,
    QueuePauseDispatchView,
    QueueResumeDispatchView,
)

app_name = "api"

ORGANIZATION = "v2/organizations/<str:org_slug>"
CLUSTER = f"{ORGANIZATION}/clusters/<str:cluster_id>"
QUEUE = f"{CLUSTER}/queues/<str:queue_id>"

urlpatterns = [
    path("v2/access-token", AccessTokenView.as_view(), name="access-token"),
    path(ORGANIZATION, OrganizationView.as_view(), name="organization"),
    path(f"{ORGANIZATION}/clusters", ClusterListView.as_view(), name="clusters"),
    path(CLUSTER, ClusterDetailView.as_view(), name="cluster"),
    path(f"{CLUSTER}/queues", QueueListView.as_view(), name="queues"),
    path(QUEUE, QueueDetailView.as_view(), name="queue"),
    path(f"{QUEUE}/pause_dispatch", QueuePauseDispatchView.as_view(), name="queue-pause"),
    path(f"{QUEUE}/resume_dispatch", QueueResumeDispatchView.as_view(), name="queue-resume"),
    path(f"{QUEUE}/environment", QueueEnvironmentView.as_view(), name="queue-environment"),
    path(f"{CLUSTER}/tokens", AgentTokenListView.as_view(), name="tokens"),
    path(f"{CLUSTER}/tokens/<str:token_id>", AgentTokenDetailView.as_view(), name="token"),
    path(f"{ORGANIZATION}/audit_events", AuditEventListView.as_view(), name="audit-events"),
    path(
        f"{ORGANIZATION}/audit_events/<str:event_uuid>",
        AuditEventDetailView.as_view(),
        name="audit-event",
    ),
]
