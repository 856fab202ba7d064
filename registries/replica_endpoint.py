"""``GET /registry/maintenance``: which mode a registry replica should be in
(docs/retention.md#replicas).

Each replica's runner (``scripts/run-registry``) asks it every ``poll_seconds`` with
``?service=<auth.token.service>&replica=<name>&mode=<readwrite|readonly>`` (``starting`` before
its registry's first start, ``stopped`` on a clean exit: the replica's row goes) and the header
its configuration sends with notifications, ``Authorization: Bearer
<REGISTRY_NOTIFICATIONS_TOKEN>`` (checked as ``POST /registry/notifications`` checks it). The
answer: ``{"mode", "poll_seconds", "retry_after"}`` (``retry_after``: seconds until the backend
grants pushes again, 0 outside a window). A report writes the replica's row, but is
idempotent (the same report again changes nothing but ``seen_at``). Refusals are JSON
``{"message"}`` and record nothing: 404 when notifications are not configured (no token to
check) or the service is no backend's, 401 for the token, 400 for a missing replica name or an
unknown mode, 409 for a new replica beyond the backend's cap.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from registries.backends import backend_for_service
from registries.notifications import json_refusal, notifications_authorized
from registries.services import REPORTED_MODES, ReplicaLimit, replica_report

MAX_NAME = 255


def replica_mode_view(request: HttpRequest) -> JsonResponse:
    """The module's docstring."""
    if request.method != "GET":
        response = json_refusal(405, f"Method {request.method} not allowed: GET.")
        response["Allow"] = "GET"
        return response
    if not settings.REGISTRY_NOTIFICATIONS_TOKEN:
        return json_refusal(
            404,
            "Registry maintenance needs REGISTRY_NOTIFICATIONS_TOKEN: the replicas' runners "
            "authenticate with it.",
        )
    if not notifications_authorized(request.headers.get("Authorization", "")):
        return json_refusal(
            401, "Send the registry's notifications token: Authorization: Bearer <token>."
        )
    service = request.GET.get("service", "")
    backend = backend_for_service(service) if service else None
    if backend is None:
        return json_refusal(404, f"No registry backend has the token service {service!r}.")
    name = request.GET.get("replica", "")
    if not 0 < len(name) <= MAX_NAME:
        return json_refusal(400, f"replica must name the replica (1 to {MAX_NAME} characters).")
    mode = request.GET.get("mode", "")
    if mode not in REPORTED_MODES:
        return json_refusal(400, f"mode must be one of {', '.join(REPORTED_MODES)}, not {mode!r}.")
    try:
        wanted = replica_report(backend, name=name, mode=mode)
    except ReplicaLimit as exc:
        return json_refusal(409, str(exc))
    return JsonResponse(
        {
            "mode": wanted,
            "poll_seconds": settings.REGISTRY_GC_REPLICA_POLL_SECONDS,
            "retry_after": backend.push_retry_after(timezone.now()),
        }
    )
