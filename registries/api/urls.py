"""The registry resource of the REST API, under ``/v2/organizations/<org_slug>/``."""

from django.urls import path

from registries.api.retention import (
    ClusterRetentionPolicyView,
    OrganizationRetentionPolicyView,
    RetentionCleanupView,
    RetentionDryRunView,
    RetentionRunListView,
)
from registries.api.usage import RegistryUsageView, RepositoryListView, TagListView, TagView
from registries.api.views import (
    ClusterQuotaView,
    OrganizationQuotaView,
    RegistryRetryView,
    RegistryView,
)

app_name = "registries-api"

REGISTRY = "clusters/<str:cluster_id>/registry"

urlpatterns = [
    path("registry-quota", OrganizationQuotaView.as_view(), name="registry-quota"),
    path(
        "registry-retention-policy",
        OrganizationRetentionPolicyView.as_view(),
        name="registry-retention-policy",
    ),
    path(REGISTRY, RegistryView.as_view(), name="registry"),
    path(f"{REGISTRY}/quota", ClusterQuotaView.as_view(), name="registry-cluster-quota"),
    path(
        f"{REGISTRY}/retention-policy",
        ClusterRetentionPolicyView.as_view(),
        name="registry-cluster-retention-policy",
    ),
    path(
        f"{REGISTRY}/retention-policy/dry-run",
        RetentionDryRunView.as_view(),
        name="registry-retention-dry-run",
    ),
    path(f"{REGISTRY}/cleanup", RetentionCleanupView.as_view(), name="registry-cleanup"),
    path(
        f"{REGISTRY}/retention-runs", RetentionRunListView.as_view(), name="registry-retention-runs"
    ),
    path(f"{REGISTRY}/retry", RegistryRetryView.as_view(), name="registry-retry"),
    path(f"{REGISTRY}/usage", RegistryUsageView.as_view(), name="registry-usage"),
    path(f"{REGISTRY}/repositories", RepositoryListView.as_view(), name="registry-repositories"),
    # A repository's name may contain "/"; a tag's may not.
    path(
        f"{REGISTRY}/repositories/<path:repository>/tags",
        TagListView.as_view(),
        name="registry-tags",
    ),
    path(
        f"{REGISTRY}/repositories/<path:repository>/tags/<str:tag>",
        TagView.as_view(),
        name="registry-tag",
    ),
]
