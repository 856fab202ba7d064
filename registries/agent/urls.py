from django.urls import path

from registries.agent.views import CurrentJobCredentialView, JobCredentialsView

urlpatterns = [
    path(
        "v3/agent/registry-credentials",
        JobCredentialsView.as_view(),
        name="agent-registry-credentials",
    ),
    path(
        "v3/agent/registry-credentials/current",
        CurrentJobCredentialView.as_view(),
        name="agent-registry-credential-current",
    ),
]
