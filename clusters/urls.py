from django.urls import path

from clusters.views import AgentEnvironmentView

urlpatterns = [
    path("v3/agent/environment", AgentEnvironmentView.as_view(), name="agent-environment"),
]
