"""``/v2/organizations/{org}/clusters/{cluster}/registry``: the cluster's container registry."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from clusters.api.base import OrganizationAPIView
from clusters.models import ApiScope


class RegistryView(OrganizationAPIView):
    read_scope = ApiScope.READ_REGISTRIES
    write_scope = ApiScope.WRITE_REGISTRIES

    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        raise NotImplementedError


class RegistryRetryView(OrganizationAPIView):
    read_scope = ApiScope.READ_REGISTRIES
    write_scope = ApiScope.WRITE_REGISTRIES

    def post(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        raise NotImplementedError
