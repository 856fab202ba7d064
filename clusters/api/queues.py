"""``/v2/organizations/{org}/clusters/{cluster}/queues[/{id}]`` and the queue actions."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters import services
from clusters.api.base import OrganizationAPIView, get_or_404, validated
from clusters.api.queue_serializers import (
    QueueCreateSerializer,
    QueueEnvironmentSerializer,
    QueuePauseDispatchSerializer,
    QueueSerializer,
    QueueUpdateSerializer,
)
from clusters.job_environment import job_environment
from clusters.models import Cluster, Queue
from controlplane.api.openapi import operation

TAGS = ["Queues"]


def _queues(cluster: Cluster) -> QuerySet[Queue]:
    """The cluster's queues, with what a response shows of them, so that reading one or a page
    takes a fixed number of queries."""
    return cluster.queues.select_related("created_by", "dispatch_paused_by").order_by("key", "pk")


class QueueAPIView(OrganizationAPIView):
    """Finds queues only within the cluster in the URL, itself only within the organization."""

    def get_queue(self, cluster_id: str, queue_id: str) -> Queue:
        return get_or_404(_queues(self.get_cluster(cluster_id)), queue_id, "No queue found")


class QueueListView(QueueAPIView):
    @operation(
        "queues_list", paginated=True, tags=TAGS, responses={200: QueueSerializer(many=True)}
    )
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.paginated(_queues(self.get_cluster(cluster_id)), QueueSerializer)

    @operation(
        "queues_create", tags=TAGS, request=QueueCreateSerializer, responses={201: QueueSerializer}
    )
    def post(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        data = validated(QueueCreateSerializer, request)
        queue = services.queue_create(cluster=cluster, created_by=self.user, **data)
        return self.respond(QueueSerializer, queue, status.HTTP_201_CREATED)


class QueueDetailView(QueueAPIView):
    @operation("queues_get", tags=TAGS, responses={200: QueueSerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))

    @operation(
        "queues_update", tags=TAGS, request=QueueUpdateSerializer, responses={200: QueueSerializer}
    )
    def put(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        queue = self.get_queue(cluster_id, queue_id)
        data = validated(QueueUpdateSerializer, request)
        services.queue_update(queue=queue, **data)
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))

    @operation(
        "queues_partial_update",
        tags=TAGS,
        request=QueueUpdateSerializer,
        responses={200: QueueSerializer},
    )
    def patch(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        return self.put(request, org_slug, cluster_id, queue_id)

    @operation("queues_delete", tags=TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        services.queue_delete(queue=self.get_queue(cluster_id, queue_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class QueuePauseDispatchView(QueueAPIView):
    @operation(
        "queues_pause_dispatch",
        tags=TAGS,
        request=QueuePauseDispatchSerializer,
        responses={200: QueueSerializer},
    )
    def post(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        queue = self.get_queue(cluster_id, queue_id)
        data = validated(QueuePauseDispatchSerializer, request)
        services.queue_pause_dispatch(queue=queue, user=self.user, note=data["note"])
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))


class QueueResumeDispatchView(QueueAPIView):
    @operation("queues_resume_dispatch", tags=TAGS, responses={200: QueueSerializer})
    def post(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        queue = self.get_queue(cluster_id, queue_id)
        services.queue_resume_dispatch(queue=queue)
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))


class QueueEnvironmentView(QueueAPIView):
    @operation(
        "queues_environment",
        tags=TAGS,
        description="The environment a job on this queue receives: the variables, and which "
        "part of the platform set each one (what the agent endpoint gives the queue's agents).",
        responses={200: QueueEnvironmentSerializer},
    )
    def get(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        environment = job_environment(self.get_queue(cluster_id, queue_id))
        return Response(QueueEnvironmentSerializer(environment).data)
