"""The registry resource of the REST API, under ``/v2/organizations/<org_slug>/``."""

from django.urls import path

from registries.api.views import (
    ClusterQuotaView,
    OrganizationQuotaView,
    RegistryRetryView,
    RegistryView,
)

app_name = "registries-api"

urlpatterns = [
    path("registry-quota", OrganizationQuotaView.as_view(), name="registry-quota"),
    path(
        "clusters/<str:cluster_id>/registry/quota",
        ClusterQuotaView.as_view(),
        name="registry-cluster-quota",
    ),
    path("clusters/<str:cluster_id>/registry", RegistryView.as_view(), name="registry"),
    path(
        "clusters/<str:cluster_id>/registry/retry",
        RegistryRetryView.as_view(),
        name="registry-retry",
    ),
]
