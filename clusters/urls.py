from django.urls import path

from clusters.agent.views import AgentEnvironmentView
from clusters.webhooks.views import BuildkiteWebhookView

urlpatterns = [
    path("v3/agent/environment", AgentEnvironmentView.as_view(), name="agent-environment"),
    path(
        "v2/webhooks/buildkite/<str:org_slug>",
        BuildkiteWebhookView.as_view(),
        name="buildkite-webhook",
    ),
]
