"""``/v2/organizations/{org}/clusters/{cluster}/tokens[/{id}]``: cluster agent tokens."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from clusters.api.base import OrganizationAPIView


class AgentTokenListView(OrganizationAPIView):
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        raise NotImplementedError


class AgentTokenDetailView(OrganizationAPIView):
    def get(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        raise NotImplementedError
