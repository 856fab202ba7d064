from django.urls import path

from registries.views import RegistryTokenView

urlpatterns = [
    path("registry/token", RegistryTokenView.as_view(), name="registry-token"),
]
