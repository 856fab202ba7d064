from django.urls import include, path

from registries.notifications import RegistryNotificationsView
from registries.views import RegistryTokenView

urlpatterns = [
    path("registry/token", RegistryTokenView.as_view(), name="registry-token"),
    path(
        "registry/notifications",
        RegistryNotificationsView.as_view(),
        name="registry-notifications",
    ),
    path("", include("registries.agent.urls")),
]
