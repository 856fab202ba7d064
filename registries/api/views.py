"""``/v2/organizations/{org}/clusters/{cluster}/registry``: the cluster's container registry.

A cluster has a registry once its first hosted queue exists; before that, 404. The registry is
read-only here except for ``retry``, which starts a failed registry again.
"""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.interface import ApiScope, Cluster, OrganizationAPIView
from controlplane.api.openapi import operation
from registries import services
from registries.api.serializers import RegistrySerializer
from registries.models import Registry
from registries.selectors import cluster_registry, registry_queryset

TAGS = ["Registry"]


class _RegistryAPIView(OrganizationAPIView):
    read_scope = ApiScope.READ_REGISTRIES
    write_scope = ApiScope.WRITE_REGISTRIES

    def get_registry(self, cluster: Cluster, *, events: bool = True) -> Registry:
        queryset = registry_queryset(cluster) if events else cluster_registry(cluster)
        registry = queryset.first()
        if registry is None:
            raise exceptions.NotFound("No registry found")
        return registry


class RegistryView(_RegistryAPIView):
    @operation("registry_get", tags=TAGS, responses={200: RegistrySerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.respond(RegistrySerializer, self.get_registry(self.get_cluster(cluster_id)))


class RegistryRetryView(_RegistryAPIView):
    @operation("registry_retry", tags=TAGS, responses={200: RegistrySerializer})
    def post(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        registry = self.get_registry(cluster, events=False)
        services.registry_retry(registry=registry)  # refuses (422) a registry that is not failed
        return self.respond(RegistrySerializer, self.get_registry(cluster))
