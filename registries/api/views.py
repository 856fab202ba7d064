"""``/v2/organizations/{org}/clusters/{cluster}/registry``: the cluster's container registry.

A cluster has a registry once its first hosted queue exists; before that, 404. The registry is
read-only here except for ``retry``, which starts a failed registry again.

``/v2/organizations/{org}/registry-quota`` and ``.../clusters/{cluster}/registry/quota``: the
organization's default registry quota and a cluster's override (docs/quotas.md).
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.interface import ApiScope, Cluster, OrganizationAPIView
from controlplane.api.openapi import operation
from registries import services
from registries.api.serializers import (
    OrganizationQuotaSerializer,
    QuotaInputSerializer,
    RegistryQuotaSerializer,
    RegistrySerializer,
)
from registries.models import Registry
from registries.quotas import (
    QuotaLimits,
    QuotaStatus,
    RegistryQuota,
    judge,
    organization_quota,
    organization_quota_states,
    quota_for,
)
from registries.selectors import cluster_registry, registry_queryset
from registries.services.quotas import LIMIT_FIELDS

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


QUOTA_TAGS = ["Registry quotas"]


def _limits(limits: QuotaLimits, source: str | None) -> dict[str, Any]:
    return {
        "set_by": source,
        "hard_bytes": limits.hard_bytes,
        "soft_bytes": limits.soft_bytes,
        "soft_bytes_set": limits.soft_bytes_set,
        "hard_tags": limits.hard_tags,
    }


def quota_json(found: QuotaStatus) -> dict[str, Any]:
    """A registry's usage against its quota (``RegistryQuotaSerializer``'s shape): the cluster's
    quota endpoint, and the ``quota`` of the usage endpoint."""
    return {
        **_limits(found.limits, found.source),
        "used_bytes": found.used_bytes,
        "used_tags": found.used_tags,
        "percent": found.percent,
        "state": found.state,
        "message": found.message,
        "push_refused": found.push_refused or None,
    }


def _written(request: Request, current: RegistryQuota | None) -> dict[str, Any]:
    """The limits a PUT (all of them; a missing one is no limit) or a PATCH (the ones sent, over
    the current ones) asks for."""
    serializer = QuotaInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)  # 422 with the field errors
    data = dict(serializer.validated_data)
    if request.method == "PATCH" and current is not None:
        return {**{name: getattr(current, name) for name in LIMIT_FIELDS}, **data}
    return data


class OrganizationQuotaView(_RegistryAPIView):
    """``/v2/organizations/{org}/registry-quota``: the default quota of the organization's
    clusters' registries (a cluster's override replaces it)."""

    def _respond(self) -> Response:
        limits, source = organization_quota(self.organization)
        states = organization_quota_states(self.organization, limits, source)
        return Response({**_limits(limits, source), "registries": states})

    @operation("registry_quota_get", tags=QUOTA_TAGS, responses={200: OrganizationQuotaSerializer})
    def get(self, request: Request, org_slug: str) -> Response:
        return self._respond()

    @operation(
        "registry_quota_update",
        tags=QUOTA_TAGS,
        request=QuotaInputSerializer,
        responses={200: OrganizationQuotaSerializer},
    )
    def put(self, request: Request, org_slug: str) -> Response:
        current = RegistryQuota.objects.filter(organization=self.organization, cluster=None)
        services.quota_set(organization=self.organization, **_written(request, current.first()))
        return self._respond()

    @operation(
        "registry_quota_partial_update",
        tags=QUOTA_TAGS,
        request=QuotaInputSerializer,
        responses={200: OrganizationQuotaSerializer},
    )
    def patch(self, request: Request, org_slug: str) -> Response:
        return self.put(request, org_slug)

    @operation("registry_quota_delete", tags=QUOTA_TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str) -> Response:
        services.quota_delete(organization=self.organization)  # none left either way: 204
        return Response(status=status.HTTP_204_NO_CONTENT)


class ClusterQuotaView(_RegistryAPIView):
    """``/v2/organizations/{org}/clusters/{cluster}/registry/quota``: the quota of the cluster's
    registry (its override, else the organization's default) and its usage against it."""

    def _respond(self, cluster: Cluster) -> Response:
        usage = cluster_registry(cluster).values_list("usage_bytes", "usage_tags").first()
        return Response(quota_json(judge(*quota_for(cluster.pk), *(usage or (0, 0)))))

    @operation(
        "registry_cluster_quota_get", tags=QUOTA_TAGS, responses={200: RegistryQuotaSerializer}
    )
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self._respond(self.get_cluster(cluster_id))

    @operation(
        "registry_cluster_quota_update",
        tags=QUOTA_TAGS,
        request=QuotaInputSerializer,
        responses={200: RegistryQuotaSerializer},
    )
    def put(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        current = RegistryQuota.objects.filter(cluster=cluster).first()
        services.quota_set(
            organization=self.organization, cluster=cluster, **_written(request, current)
        )
        return self._respond(cluster)

    @operation(
        "registry_cluster_quota_partial_update",
        tags=QUOTA_TAGS,
        request=QuotaInputSerializer,
        responses={200: RegistryQuotaSerializer},
    )
    def patch(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.put(request, org_slug, cluster_id)

    @operation("registry_cluster_quota_delete", tags=QUOTA_TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        services.quota_delete(organization=self.organization, cluster=cluster)
        return Response(status=status.HTTP_204_NO_CONTENT)
