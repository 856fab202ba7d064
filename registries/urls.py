from django.urls import include, path

from registries.notifications import RegistryNotificationsView
from registries.replica_endpoint import replica_mode_view
from registries.views import RegistryTokenView

urlpatterns = [
    path("registry/token", RegistryTokenView.as_view(), name="registry-token"),
    path(
        "registry/notifications",
        RegistryNotificationsView.as_view(),
        name="registry-notifications",
    ),
    path("registry/maintenance", replica_mode_view, name="registry-maintenance"),
    path("", include("registries.agent.urls")),
]
