"""``POST /registry/notifications``: Distribution's events (docs/usage.md#registry-events).

The registry posts ``{"events": [...]}`` (``Content-Type:
application/vnd.docker.distribution.events.v1+json``) with the header the generated
configuration gives it, ``Authorization: Bearer <REGISTRY_NOTIFICATIONS_TOKEN>``. Checked in this
order, each refusal a JSON ``{"message"}`` that records nothing: notifications configured (404),
the token, compared in constant time with the current one and ``..._PREVIOUS_TOKENS`` (401), the
content type (415), the body's size (413), then the envelope (400: JSON, an ``events`` list of
at most ``MAX_EVENTS``, each with an ``id``, a known ``action``, a ``timestamp`` with its offset
and a ``target`` with a ``repository``). Then ``notifications_receive`` records the events once
each and a worker applies them: 200 ``{"accepted": n}``, the same answer for a batch sent again.

Refusals are counted in ``controlplane_registry_notification_refusals_total`` rather than
logged one by one, and no log line holds the token. A 4xx makes Distribution retry the batch
(in memory, with backoff), so the endpoint refuses only what the registry never sends.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.utils.dateparse import parse_datetime
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from controlplane import metrics
from registries.services import Notification, notifications_receive
from registries.services.notifications import ACTIONS

CONTENT_TYPES = ("application/vnd.docker.distribution.events.v1+json", "application/json")
#: Distribution 2.8 posts one event at a time; a batch this long is not from a registry.
MAX_EVENTS = 1000
MAX_ID = 64
MAX_REPOSITORY = 255


class Invalid(ValueError):
    """The envelope is not one Distribution sends; the message says what is wrong."""


def json_refusal(status: int, message: str) -> JsonResponse:
    """A refusal as the registries' endpoints answer it (this one and ``GET
    /registry/maintenance``): JSON ``{"message"}`` with ``status``, recording nothing."""
    return JsonResponse({"message": message}, status=status)


def _refuse(reason: str, status: int, message: str) -> JsonResponse:
    metrics.REGISTRY_NOTIFICATION_REFUSALS.labels(reason).inc()
    response = json_refusal(status, message)
    # Counted, not logged: Django would log a warning per 4xx (django.utils.log.log_response).
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def notifications_authorized(header: str) -> bool:
    """Whether ``Authorization`` is ``Bearer`` and an accepted token (a replica's runner sends the
    same to ``GET /registry/maintenance``: the one in its configuration). Every accepted token
    is compared, each as a digest of the same length, so the time says nothing about any."""
    scheme, _, presented = header.partition(" ")
    given = _digest(presented.strip())
    accepted = [
        settings.REGISTRY_NOTIFICATIONS_TOKEN,
        *settings.REGISTRY_NOTIFICATIONS_PREVIOUS_TOKENS,
    ]
    matches = [hmac.compare_digest(given, _digest(token)) for token in accepted if token]
    return scheme.lower() == "bearer" and any(matches)


@method_decorator(csrf_exempt, name="dispatch")
class RegistryNotificationsView(View):
    """``POST /registry/notifications`` (the module's docstring)."""

    http_method_names = ["post"]

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = JsonResponse(
            {"message": f"Method {request.method} not allowed: POST."}, status=405
        )
        response["Allow"] = "POST"
        return response

    def post(self, request: HttpRequest) -> JsonResponse:
        return _receive(request)


def _receive(request: HttpRequest) -> JsonResponse:
    if not settings.REGISTRY_NOTIFICATIONS_TOKEN:
        return _refuse(
            "unconfigured",
            404,
            "Registry notifications are not configured here: set REGISTRY_NOTIFICATIONS_TOKEN.",
        )
    if not notifications_authorized(request.headers.get("Authorization", "")):
        return _refuse(
            "unauthorized",
            401,
            "Send the registry's notifications token: Authorization: Bearer <token>.",
        )
    if request.content_type not in CONTENT_TYPES:
        return _refuse(
            "media_type",
            415,
            f"Send the events as {CONTENT_TYPES[0]} (or {CONTENT_TYPES[1]}), not "
            f"{request.content_type or 'no Content-Type'}.",
        )
    try:
        body = request.body
    except RequestDataTooBig:
        return _refuse(
            "too_large",
            413,
            f"The request body is larger than the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} "
            "bytes.",
        )
    try:
        events = parse_envelope(body)
    except Invalid as exc:
        return _refuse("invalid", 400, str(exc))
    notifications_receive(events)
    return JsonResponse({"accepted": len(events)})


def parse_envelope(body: bytes) -> list[Notification]:
    """The events of Distribution's envelope; ``Invalid`` naming the first thing wrong."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"The body is not JSON: {exc}.") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise Invalid('Send {"events": [...]}: the body has no "events" list.')
    events = envelope["events"]
    if len(events) > MAX_EVENTS:
        raise Invalid(f"{len(events)} events in one batch; at most {MAX_EVENTS}.")
    return [_event(index, event) for index, event in enumerate(events)]


def _event(index: int, event: Any) -> Notification:
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise Invalid(f"{where} is not an object.")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID:
        raise Invalid(f"{where}.id must be a string of 1 to {MAX_ID} characters.")
    action = event.get("action")
    if action not in ACTIONS:
        raise Invalid(f"{where}.action {action!r} is not one of {', '.join(ACTIONS)}.")
    timestamp = event.get("timestamp")
    occurred_at = parse_datetime(timestamp) if isinstance(timestamp, str) else None
    if occurred_at is None or occurred_at.tzinfo is None:
        raise Invalid(f"{where}.timestamp must be an RFC 3339 time with its offset.")
    target = event.get("target")
    if not isinstance(target, dict):
        raise Invalid(f"{where}.target is not an object.")
    repository = target.get("repository")
    if not isinstance(repository, str) or not 0 < len(repository) <= MAX_REPOSITORY:
        raise Invalid(
            f"{where}.target.repository must be a string of 1 to {MAX_REPOSITORY} characters."
        )
    _check_target(where, target)
    return Notification(
        id=event_id,
        action=action,
        repository=repository,
        occurred_at=occurred_at,
        target=target,
        method=_text(event.get("request"), "method"),
        actor=_text(event.get("actor"), "name"),
    )


def _text(part: Any, name: str) -> str:
    """``part[name]`` where ``part`` is an object and that is a string; else "" (the request and
    actor are informative: an event without them is still applied)."""
    value = part.get(name) if isinstance(part, dict) else None
    return value[:255] if isinstance(value, str) else ""


def _check_target(where: str, target: dict[str, Any]) -> None:
    """The target's optional fields have the types the worker reads."""
    for name in ("digest", "tag", "mediaType"):
        if name in target and not isinstance(target[name], str):
            raise Invalid(f"{where}.target.{name} must be a string.")
    for name in ("size", "length"):
        if name in target and (not isinstance(target[name], int) or target[name] < 0):
            raise Invalid(f"{where}.target.{name} must be a whole number of bytes.")
    references = target.get("references", [])
    if not isinstance(references, list) or not all(
        isinstance(r, dict)
        and isinstance(r.get("digest"), str)
        and isinstance(r.get("size", 0), int)
        for r in references
    ):
        raise Invalid(f"{where}.target.references must be a list of {{digest, size}} objects.")
