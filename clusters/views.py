"""The agent API (what a job on a cluster's agents receives) and the platform's webhook."""

from __future__ import annotations

import time
from typing import cast

from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clusters import services, webhooks
from clusters.api.queue_serializers import QueueEnvironmentSerializer
from clusters.authentication import ClusterAgentTokenAuthentication
from clusters.models import ClusterAgentToken
from clusters.renderers import ShellExportRenderer
from clusters.selectors import agent_environment_for_queue


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
        environment = QueueEnvironmentSerializer.build(
            queue, agent_environment_for_queue(queue=queue)
        )
        # The REST API's queue environment, with the cluster the token belongs to.
        return Response(
            {"cluster_id": str(cluster.pk), **QueueEnvironmentSerializer(environment).data}
        )

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are always JSON: an error rendered as shell lines could be eval'd by a hook.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class BuildkiteWebhookView(APIView):
    """``POST /v2/webhooks/buildkite/<org>``: the platform's queue and cluster events.

    Checked in this order, each refusal a JSON ``{"message"}`` that writes nothing: the body
    size (413, by the middleware), the signature or token (401), the delivery id header (400),
    the JSON (400), ``X-Buildkite-Event`` against the body's ``event`` (400), the event type
    (400 unless it is one this endpoint applies, or ``ping``, answered 200), the payload (422).
    Then the event is applied once (``services.webhook_delivery_receive``): 200, and a repeated
    delivery gets the original answer again.
    """

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    parser_classes: list[type] = []  # the signature is over the raw body: it is read as bytes

    def post(self, request: Request, org_slug: str) -> Response:
        body = request.body
        try:
            verified = webhooks.verify(org_slug, request.headers, body, time.time())
        except webhooks.WebhookRefused as refused:
            return Response({"message": refused.message}, status=refused.status)
        organization = verified.secret.organization
        delivery_id = request.headers.get(webhooks.DELIVERY_HEADER, "").strip()
        if not webhooks.DELIVERY_ID.fullmatch(delivery_id):
            raise exceptions.ParseError(
                f"Send a unique id for the delivery in {webhooks.DELIVERY_HEADER} (1 to 128 "
                "letters, digits, '.', '_', ':' or '-'): retries and replays reuse it."
            )
        try:
            payload = webhooks.parse_body(body)
        except ValueError as exc:
            raise exceptions.ParseError(f"The body is not JSON: {exc}.") from exc
        event = payload.get("event")
        if request.headers.get(webhooks.EVENT_HEADER) != event:
            raise exceptions.ParseError(
                f"{webhooks.EVENT_HEADER} ({request.headers.get(webhooks.EVENT_HEADER)!r}) does "
                f"not agree with the body's event ({event!r})."
            )
        if event == webhooks.PING:
            return Response({"message": "pong"})
        if event not in webhooks.EVENTS:
            raise exceptions.ParseError(
                f"Unknown event {event!r}: this endpoint applies {', '.join(webhooks.EVENTS)} "
                "(and answers ping)."
            )
        serializer = webhooks.EVENTS[event](data=payload)
        serializer.is_valid(raise_exception=True)
        response, repeated = services.webhook_delivery_receive(
            organization=organization,
            delivery_id=delivery_id,
            payload=payload,
            body=body,
            data=dict(serializer.validated_data),
            verified=verified,
        )
        return Response(response, headers={"X-Delivery-Repeated": "true" if repeated else "false"})
