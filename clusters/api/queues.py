"""``/v2/organizations/{org}/clusters/{cluster}/queues[/{id}]`` and the queue actions."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from clusters.api.base import OrganizationAPIView


class QueueListView(OrganizationAPIView):
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        raise NotImplementedError


class QueueDetailView(OrganizationAPIView):
    def get(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        raise NotImplementedError


class QueuePauseDispatchView(OrganizationAPIView):
    def post(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        raise NotImplementedError


class QueueResumeDispatchView(OrganizationAPIView):
    def post(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        raise NotImplementedError


class QueueEnvironmentView(OrganizationAPIView):
    def get(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        raise NotImplementedError
