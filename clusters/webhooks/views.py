"""The platform's webhook endpoint: ``POST /v2/webhooks/buildkite/<org>``."""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.actors import request_context, webhook_actor
from clusters.audit import acting_as
from clusters.webhooks import payloads, signing
from clusters.webhooks.delivery import webhook_delivery_receive, webhook_delivery_repeated
from controlplane import metrics
from controlplane.api.fast_path import FastPathAPIView, plain_request

#: The ``X-Delivery-Repeated`` header of a 200 -> the delivery's outcome; no header: a ping.
REPEATED_OUTCOMES = {"true": "repeated", "false": "applied", None: "ping"}


class BuildkiteWebhookView(FastPathAPIView):
    """``POST /v2/webhooks/buildkite/<org>``: the platform's queue and cluster events.

    Checked in this order, each refusal a JSON ``{"message"}`` that writes nothing: the body
    size (413, by the middleware), the signature or token (401), the delivery id header (400),
    the JSON (400), ``X-Buildkite-Event`` against the body's ``event`` (400), the event type
    (400 unless it is one this endpoint applies, or ``ping``, answered 200), the payload (422).
    Then the event is applied once (``webhook_delivery_receive``): 200, and a repeated
    delivery gets the original answer again.

    Cheap where it is hit hardest, in plain Django (``fast``; the same bytes as the REST
    framework's answers): the signature is checked against the organization's cached secrets
    (``signing.verify``: no query when warm), and a retry of a recorded delivery is answered
    from one indexed lookup right after the delivery id header (``webhook_delivery_repeated``),
    before its body is parsed, and its next retries in the process from memory. A 401 is
    counted in ``controlplane_webhook_refusals_total`` by reason, not logged: whoever can reach
    the endpoint could otherwise write a warning line per request. The rest of a verified
    delivery goes on in ``post``.
    """

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    parser_classes: list[type] = []  # the signature is over the raw body: it is read as bytes

    #: What ``fast`` verified, for ``post``; None when ``fast`` left the request to the REST
    #: framework before verifying it.
    signed: signing.Signed | None = None

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = super().dispatch(request, *args, **kwargs)
        metrics.WEBHOOK_DELIVERIES.labels(delivery_outcome(response)).inc()
        return response

    def fast(self, request: HttpRequest) -> HttpResponse | None:
        """A POST's signature (401), delivery id (400) and exact repeat (200); None leaves a
        verified delivery that is not a repeat to ``post``, and what the REST framework would
        answer otherwise (other methods, ``Accept`` headers, format overrides) to it."""
        if plain_request(request, "POST") is None:
            return None  # the REST framework's 405, 400, format override or negotiation
        try:
            signed = self._verify(request)
        except signing.WebhookRefused as refused:
            return _refusal(refused)
        original = webhook_delivery_repeated(
            organization_id=signed.organization_id,
            delivery_id=_delivery_id(request),
            signature=signed.signature,
            body=request.body,
            event=request.headers.get(payloads.EVENT_HEADER),
        )
        if original is None:
            return None
        return HttpResponse(
            original, content_type=_RENDERER.media_type, headers={"X-Delivery-Repeated": "true"}
        )

    def post(self, request: Request, org_slug: str) -> HttpResponseBase:
        body = request.body
        try:
            verified = signing.verified_secret(self.signed or self._verify(request))
        except signing.WebhookRefused as refused:
            return _refusal(refused)
        organization = verified.secret.organization
        delivery_id = _delivery_id(request)
        try:
            payload = payloads.parse_body(body)
        except ValueError as exc:
            raise exceptions.ParseError(f"The body is not JSON: {exc}.") from exc
        event = payload.get("event")
        if request.headers.get(payloads.EVENT_HEADER) != event:
            raise exceptions.ParseError(
                f"{payloads.EVENT_HEADER} ({request.headers.get(payloads.EVENT_HEADER)!r}) does "
                f"not agree with the body's event ({event!r})."
            )
        if event == payloads.PING:
            return Response({"message": "pong"})
        if event not in payloads.EVENTS:
            raise exceptions.ParseError(
                f"Unknown event {event!r}: this endpoint applies {', '.join(payloads.EVENTS)} "
                "(and answers ping)."
            )
        serializer = payloads.EVENTS[event](data=payload)
        serializer.is_valid(raise_exception=True)
        # What the delivery changes is recorded as the delivery's doing (clusters.audit).
        context = request_context(request, "WebhookContext", event=event)
        with acting_as(webhook_actor(delivery_id), context):
            response, repeated = webhook_delivery_receive(
                organization=organization,
                delivery_id=delivery_id,
                payload=payload,
                body=body,
                data=dict(serializer.validated_data),
                verified=verified,
            )
        return Response(response, headers={"X-Delivery-Repeated": "true" if repeated else "false"})

    def _verify(self, request: HttpRequest | Request) -> signing.Signed:
        """The delivery's signature or token, verified (``signing.verify``; raises its
        ``WebhookRefused``), and kept for ``post``."""
        org_slug = self.kwargs["org_slug"]
        self.signed = signing.verify(org_slug, request.headers, request.body, time.time())
        return self.signed


_RENDERER = JSONRenderer()


def _json(data: dict[str, Any], *, status: int = 200, **kwargs: Any) -> HttpResponse:
    """``data`` as ``Response(data)`` renders it."""
    return HttpResponse(
        _RENDERER.render(data), status=status, content_type=_RENDERER.media_type, **kwargs
    )


def _refusal(refused: signing.WebhookRefused) -> HttpResponse:
    """The answer to a delivery ``signing`` refused, counted by reason rather than logged
    (Django logs every 4xx a view answers unless the response says it was logged)."""
    metrics.WEBHOOK_REFUSALS.labels(refused.reason).inc()
    response = _json({"message": refused.message}, status=refused.status)
    response._has_been_logged = True  # type: ignore[attr-defined]  # django.utils.log.log_response
    return response


def _delivery_id(request: HttpRequest | Request) -> str:
    """The delivery's id (``X-Buildkite-Delivery``); 400 without a usable one."""
    delivery_id: str = request.headers.get(payloads.DELIVERY_HEADER, "").strip()
    if not payloads.DELIVERY_ID.fullmatch(delivery_id):
        raise exceptions.ParseError(
            f"Send a unique id for the delivery in {payloads.DELIVERY_HEADER} (1 to 128 "
            "letters, digits, '.', '_', ':' or '-'): retries and replays reuse it."
        )
    return delivery_id


def delivery_outcome(response: HttpResponseBase) -> str:
    """``controlplane_webhook_deliveries_total``'s outcome: applied, repeated or ping (200),
    refused (401: signature or token), invalid (400, 413, 422), error (anything else)."""
    if response.status_code == 200:
        return REPEATED_OUTCOMES.get(response.get("X-Delivery-Repeated"), "applied")
    if response.status_code == 401:
        return "refused"
    return "invalid" if response.status_code in (400, 413, 422) else "error"
