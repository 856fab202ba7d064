"""The REST API's views, under ``/v2/organizations/{org}/``: the organization, its clusters,
their queues (with the queue actions and a job's environment) and their agent tokens, in
Buildkite's paths; and ``/v2/access-token``, the calling token itself.

Every view derives from ``ClustersAPIView``, which names the clusters scopes; authentication,
the organization and the scopes are checked by ``OrganizationAPIView`` (``clusters.api.base``).
Writes go through ``clusters.services``.

Agent tokens: only active tokens are listed and found; a revoked (or expired) token answers 404,
as if it were never there. The secret is in the create response only.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters import services
from clusters.api.base import AccessTokenAPIView, OrganizationAPIView, get_or_404, validated
from clusters.api.serializers import (
    AccessTokenSerializer,
    AgentTokenCreatedSerializer,
    AgentTokenCreateSerializer,
    AgentTokenSerializer,
    AgentTokenUpdateSerializer,
    ClusterCreateSerializer,
    ClusterSerializer,
    ClusterUpdateSerializer,
    OrganizationSerializer,
    QueueCreateSerializer,
    QueueEnvironmentSerializer,
    QueuePauseDispatchSerializer,
    QueueSerializer,
    QueueUpdateSerializer,
)
from clusters.api.serializers.common import unshown_user_fields
from clusters.job_environment import job_environment
from clusters.models import ApiScope, Cluster, ClusterAgentToken, ClusterAgentTokenQuerySet, Queue
from controlplane.api.caching import no_store
from controlplane.api.openapi import operation


# The scopes of every clusters view. (A comment, not a docstring: drf-spectacular would put a
# docstring into the description of every operation of the views below.)
class ClustersAPIView(OrganizationAPIView):
    read_scope = ApiScope.READ_CLUSTERS
    write_scope = ApiScope.WRITE_CLUSTERS


# --- the caller's token and organization ------------------------------------------------------


class AccessTokenView(AccessTokenAPIView):
    @operation(
        "access_token_get",
        tags=["Access token"],
        description="The API access token this request was made with: its uuid, scopes, "
        "description and owner. It needs no scope.",
        responses={200: AccessTokenSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(AccessTokenSerializer(self.token).data)


class OrganizationView(OrganizationAPIView):
    # Buildkite's scope; a token of another organization gets "No organization found" (404).
    read_scope = ApiScope.READ_ORGANIZATIONS

    @operation("organizations_get", tags=["Organizations"], responses={200: OrganizationSerializer})
    def get(self, request: Request, org_slug: str) -> Response:
        return self.respond(OrganizationSerializer, self.organization)


# --- clusters ----------------------------------------------------------------------------------

CLUSTER_TAGS = ["Clusters"]


def _shown_clusters(clusters: QuerySet[Cluster]) -> QuerySet[Cluster]:
    """What a response shows of clusters, in the order of a list."""
    return (
        clusters.select_related("created_by")
        .defer(*unshown_user_fields("created_by"))
        .order_by("name", "pk")
    )


def _clusters_queryset(view: OrganizationAPIView) -> QuerySet[Cluster]:
    return _shown_clusters(view.clusters())


class ClusterListView(ClustersAPIView):
    @operation(
        "clusters_list",
        paginated=True,
        tags=CLUSTER_TAGS,
        responses={200: ClusterSerializer(many=True)},
    )
    def get(self, request: Request, org_slug: str) -> Response:
        return self.paginated_clusters(_shown_clusters, ClusterSerializer)

    @operation(
        "clusters_create",
        tags=CLUSTER_TAGS,
        request=ClusterCreateSerializer,
        responses={201: ClusterSerializer},
    )
    def post(self, request: Request, org_slug: str) -> Response:
        data = validated(ClusterCreateSerializer, request)
        cluster = services.cluster_create(
            organization=self.organization, created_by=self.user, **data
        )
        return self.respond(ClusterSerializer, cluster, status.HTTP_201_CREATED)


class ClusterDetailView(ClustersAPIView):
    def _cluster(self, cluster_id: str) -> Cluster:
        return get_or_404(_clusters_queryset(self), cluster_id, "No cluster found")

    @operation("clusters_get", tags=CLUSTER_TAGS, responses={200: ClusterSerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.respond(ClusterSerializer, self._cluster(cluster_id))

    @operation(
        "clusters_update",
        tags=CLUSTER_TAGS,
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
        tags=CLUSTER_TAGS,
        request=ClusterUpdateSerializer,
        responses={200: ClusterSerializer},
    )
    def patch(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.put(request, org_slug, cluster_id)

    @operation("clusters_delete", tags=CLUSTER_TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        services.cluster_delete(cluster=self._cluster(cluster_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- queues ------------------------------------------------------------------------------------

QUEUE_TAGS = ["Queues"]


def _shown_queues(queues: QuerySet[Queue]) -> QuerySet[Queue]:
    """Queues with what a response shows of them, so that reading one or a page takes a fixed
    number of queries, in the order of a list."""
    relations = ("created_by", "dispatch_paused_by")
    return (
        queues.select_related(*relations)
        .defer(*unshown_user_fields(*relations))
        .order_by("key", "pk")
    )


def _queues(cluster: Cluster) -> QuerySet[Queue]:
    """The cluster's queues (see ``_shown_queues``)."""
    return _shown_queues(cluster.queues.all())


class QueueAPIView(ClustersAPIView):
    """Finds queues only within the cluster in the URL, itself only within the organization."""

    def get_queue(self, cluster_id: str, queue_id: str) -> Queue:
        return get_or_404(_queues(self.get_cluster(cluster_id)), queue_id, "No queue found")


class QueueListView(QueueAPIView):
    @operation(
        "queues_list", paginated=True, tags=QUEUE_TAGS, responses={200: QueueSerializer(many=True)}
    )
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.paginated_queues(cluster_id, _shown_queues, QueueSerializer)

    @operation(
        "queues_create",
        tags=QUEUE_TAGS,
        request=QueueCreateSerializer,
        responses={201: QueueSerializer},
    )
    def post(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        data = validated(QueueCreateSerializer, request)
        queue = services.queue_create(cluster=cluster, created_by=self.user, **data)
        return self.respond(QueueSerializer, queue, status.HTTP_201_CREATED)


class QueueDetailView(QueueAPIView):
    @operation("queues_get", tags=QUEUE_TAGS, responses={200: QueueSerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))

    @operation(
        "queues_update",
        tags=QUEUE_TAGS,
        request=QueueUpdateSerializer,
        responses={200: QueueSerializer},
    )
    def put(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        queue = self.get_queue(cluster_id, queue_id)
        data = validated(QueueUpdateSerializer, request)
        services.queue_update(queue=queue, **data)
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))

    @operation(
        "queues_partial_update",
        tags=QUEUE_TAGS,
        request=QueueUpdateSerializer,
        responses={200: QueueSerializer},
    )
    def patch(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        return self.put(request, org_slug, cluster_id, queue_id)

    @operation("queues_delete", tags=QUEUE_TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        services.queue_delete(queue=self.get_queue(cluster_id, queue_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class QueuePauseDispatchView(QueueAPIView):
    @operation(
        "queues_pause_dispatch",
        tags=QUEUE_TAGS,
        request=QueuePauseDispatchSerializer,
        responses={200: QueueSerializer},
    )
    def post(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        queue = self.get_queue(cluster_id, queue_id)
        data = validated(QueuePauseDispatchSerializer, request)
        services.queue_pause_dispatch(queue=queue, user=self.user, note=data["note"])
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))


class QueueResumeDispatchView(QueueAPIView):
    @operation("queues_resume_dispatch", tags=QUEUE_TAGS, responses={200: QueueSerializer})
    def post(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        queue = self.get_queue(cluster_id, queue_id)
        services.queue_resume_dispatch(queue=queue)
        return self.respond(QueueSerializer, self.get_queue(cluster_id, queue_id))


class QueueEnvironmentView(QueueAPIView):
    @operation(
        "queues_environment",
        tags=QUEUE_TAGS,
        description="The environment a job on this queue receives: the variables, and which "
        "part of the platform set each one (what the agent endpoint gives the queue's agents).",
        responses={200: QueueEnvironmentSerializer},
    )
    def get(self, request: Request, org_slug: str, cluster_id: str, queue_id: str) -> Response:
        environment = job_environment(self.get_queue(cluster_id, queue_id))
        return Response(QueueEnvironmentSerializer(environment).data)


# --- agent tokens ------------------------------------------------------------------------------

TOKEN_TAGS = ["Agent tokens"]


def _tokens_queryset(view: OrganizationAPIView, cluster_id: str) -> ClusterAgentTokenQuerySet:
    tokens = view.get_cluster(cluster_id).agent_tokens.active()
    return tokens.select_related("created_by").order_by("-created_at", "pk")


class AgentTokenListView(ClustersAPIView):
    @operation(
        "cluster_tokens_list",
        paginated=True,
        tags=TOKEN_TAGS,
        responses={200: AgentTokenSerializer(many=True)},
    )
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.paginated(_tokens_queryset(self, cluster_id), AgentTokenSerializer)

    @operation(
        "cluster_tokens_create",
        tags=TOKEN_TAGS,
        request=AgentTokenCreateSerializer,
        responses={201: AgentTokenCreatedSerializer},
    )
    def post(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        data = validated(AgentTokenCreateSerializer, request)
        token, secret = services.agent_token_create(
            cluster=cluster,
            description=data["description"],
            expires_at=data.get("expires_at"),
            allowed_ip_addresses=data.get("allowed_ip_addresses"),
            created_by=self.user,
        )
        # The one response that carries the token: no cache may keep it.
        return no_store(
            self.respond(AgentTokenCreatedSerializer, token, status.HTTP_201_CREATED, secret=secret)
        )


class AgentTokenDetailView(ClustersAPIView):
    def _token(self, cluster_id: str, token_id: str) -> ClusterAgentToken:
        return get_or_404(_tokens_queryset(self, cluster_id), token_id, "No token found")

    @operation("cluster_tokens_get", tags=TOKEN_TAGS, responses={200: AgentTokenSerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        return self.respond(AgentTokenSerializer, self._token(cluster_id, token_id))

    @operation(
        "cluster_tokens_update",
        tags=TOKEN_TAGS,
        request=AgentTokenUpdateSerializer,
        responses={200: AgentTokenSerializer},
    )
    def put(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        token = self._token(cluster_id, token_id)
        data = validated(AgentTokenUpdateSerializer, request)
        if data:
            token = services.agent_token_update(token=token, **data)
        return self.respond(AgentTokenSerializer, token)

    @operation(
        "cluster_tokens_partial_update",
        tags=TOKEN_TAGS,
        request=AgentTokenUpdateSerializer,
        responses={200: AgentTokenSerializer},
    )
    def patch(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        return self.put(request, org_slug, cluster_id, token_id)

    @operation("cluster_tokens_revoke", tags=TOKEN_TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        services.agent_token_revoke(token=self._token(cluster_id, token_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
