"""``/v2/organizations/{org}/clusters[/{id}]``: list, create, read, update, delete."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters import services
from clusters.api.base import OrganizationAPIView, get_or_404, validated
from clusters.api.serializers import (
    ClusterCreateSerializer,
    ClusterSerializer,
    ClusterUpdateSerializer,
)
from clusters.models import Cluster
from controlplane.api.openapi import operation

TAGS = ["Clusters"]


def _clusters_queryset(view: OrganizationAPIView) -> QuerySet[Cluster]:
    return view.clusters().select_related("created_by").order_by("name", "pk")


class ClusterListView(OrganizationAPIView):
    @operation(
        "clusters_list", paginated=True, tags=TAGS, responses={200: ClusterSerializer(many=True)}
    )
    def get(self, request: Request, org_slug: str) -> Response:
        return self.paginated(_clusters_queryset(self), ClusterSerializer)

    @operation(
        "clusters_create",
        tags=TAGS,
        request=ClusterCreateSerializer,
        responses={201: ClusterSerializer},
    )
    def post(self, request: Request, org_slug: str) -> Response:
        data = validated(ClusterCreateSerializer, request)
        cluster = services.cluster_create(
            organization=self.organization, created_by=self.user, **data
        )
        return self.respond(ClusterSerializer, cluster, status.HTTP_201_CREATED)


class ClusterDetailView(OrganizationAPIView):
    def _cluster(self, cluster_id: str) -> Cluster:
        return get_or_404(_clusters_queryset(self), cluster_id, "No cluster found")

    @operation("clusters_get", tags=TAGS, responses={200: ClusterSerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.respond(ClusterSerializer, self._cluster(cluster_id))

    @operation(
        "clusters_update",
        tags=TAGS,
        request=ClusterUpdateSerializer,
        responses={200: ClusterSerializer},
    )
    def put(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self._cluster(cluster_id)
        data = validated(ClusterUpdateSerializer, request)
        changes: dict[str, Any] = dict(data)
        if "default_queue_id" in changes:
            queue_id = changes.pop("default_queue_id")
            queue = None if queue_id is None else cluster.queues.filter(pk=queue_id).first()
            if queue_id is not None and queue is None:
                raise ValidationError({"default_queue_id": "No queue with this id in the cluster."})
            changes["default_queue"] = queue
        services.cluster_update(cluster=cluster, **changes)
        return self.respond(ClusterSerializer, self._cluster(cluster_id))

    @operation(
        "clusters_partial_update",
        tags=TAGS,
        request=ClusterUpdateSerializer,
        responses={200: ClusterSerializer},
    )
    def patch(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.put(request, org_slug, cluster_id)

    @operation("clusters_delete", tags=TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        services.cluster_delete(cluster=self._cluster(cluster_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
