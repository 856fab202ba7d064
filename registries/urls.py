from django.urls import include, path

from registries.views import RegistryTokenView

urlpatterns = [
    path("registry/token", RegistryTokenView.as_view(), name="registry-token"),
    path("", include("registries.agent.urls")),
]
