"""The agent API: what a job on a cluster's agents receives."""

from __future__ import annotations

from typing import Any, cast

from django.http.response import HttpResponseBase
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clusters.agent.authentication import ClusterAgentTokenAuthentication
from clusters.agent.renderers import ShellExportRenderer
from clusters.job_environment import job_environment
from clusters.models import ClusterAgentToken
from controlplane import metrics


class QueueRequired(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Name the agent's queue with ?queue=<key>; this cluster has no default queue."


class AgentEnvironmentView(APIView):
    """``GET /v3/agent/environment?queue=<key>``: the environment of a job on that queue.

    JSON by default; ``?format=shell`` (or ``Accept: text/x-shellscript``) gives ``export`` lines
    for ``deploy/agent/hooks/environment``. The queue must belong to the token's cluster; with no
    ``queue`` the cluster's default queue is used, as agents without a queue tag join it.
    """

    authentication_classes = [ClusterAgentTokenAuthentication]
    renderer_classes = [JSONRenderer, ShellExportRenderer]

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = super().dispatch(request, *args, **kwargs)
        metrics.AGENT_ENVIRONMENT_REQUESTS.labels(metrics.http_outcome(response.status_code)).inc()
        return response

    def get(self, request: Request) -> Response:
        token = cast(ClusterAgentToken, request.auth)  # the only authentication class
        cluster = token.cluster
        key = request.query_params.get("queue", "")
        # Through the related manager, so each queue found already carries ``cluster``.
        if key:
            queue = cluster.queues.filter(key=key).first()
        elif cluster.default_queue_id:
            queue = cluster.queues.filter(pk=cluster.default_queue_id).first()
        else:
            raise QueueRequired()
        if queue is None:
            raise exceptions.NotFound(f"No queue {key!r} found in this agent token's cluster.")
        # The REST API's queue environment, with the cluster the token belongs to.
        return Response({"cluster_id": str(cluster.pk), **job_environment(queue).as_dict()})

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are always JSON: an error rendered as shell lines could be eval'd by a hook.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
