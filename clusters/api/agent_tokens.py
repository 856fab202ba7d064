"""``/v2/organizations/{org}/clusters/{cluster}/tokens[/{id}]``: cluster agent tokens.

Only active tokens are listed and found: a revoked (or expired) token answers 404, as if it were
never there. The secret is in the create response only.
"""

from __future__ import annotations

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters import services
from clusters.api.agent_token_serializers import (
    AgentTokenCreatedSerializer,
    AgentTokenCreateSerializer,
    AgentTokenSerializer,
    AgentTokenUpdateSerializer,
)
from clusters.api.base import OrganizationAPIView, get_or_404, validated
from clusters.models import ClusterAgentToken, ClusterAgentTokenQuerySet
from controlplane.api.openapi import operation

TAGS = ["Agent tokens"]


def _tokens_queryset(view: OrganizationAPIView, cluster_id: str) -> ClusterAgentTokenQuerySet:
    tokens = view.get_cluster(cluster_id).agent_tokens.active()
    return tokens.select_related("created_by").order_by("-created_at", "pk")


class AgentTokenListView(OrganizationAPIView):
    @operation(
        "cluster_tokens_list",
        paginated=True,
        tags=TAGS,
        responses={200: AgentTokenSerializer(many=True)},
    )
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self.paginated(_tokens_queryset(self, cluster_id), AgentTokenSerializer)

    @operation(
        "cluster_tokens_create",
        tags=TAGS,
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
            created_by=self.user,
        )
        return self.respond(
            AgentTokenCreatedSerializer, token, status.HTTP_201_CREATED, secret=secret
        )


class AgentTokenDetailView(OrganizationAPIView):
    def _token(self, cluster_id: str, token_id: str) -> ClusterAgentToken:
        return get_or_404(_tokens_queryset(self, cluster_id), token_id, "No token found")

    @operation("cluster_tokens_get", tags=TAGS, responses={200: AgentTokenSerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        return self.respond(AgentTokenSerializer, self._token(cluster_id, token_id))

    @operation(
        "cluster_tokens_update",
        tags=TAGS,
        request=AgentTokenUpdateSerializer,
        responses={200: AgentTokenSerializer},
    )
    def put(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        token = self._token(cluster_id, token_id)
        data = validated(AgentTokenUpdateSerializer, request)
        if "description" in data:
            token = services.agent_token_update(token=token, description=data["description"])
        return self.respond(AgentTokenSerializer, token)

    @operation(
        "cluster_tokens_partial_update",
        tags=TAGS,
        request=AgentTokenUpdateSerializer,
        responses={200: AgentTokenSerializer},
    )
    def patch(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        return self.put(request, org_slug, cluster_id, token_id)

    @operation("cluster_tokens_revoke", tags=TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str, token_id: str) -> Response:
        services.agent_token_revoke(token=self._token(cluster_id, token_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
