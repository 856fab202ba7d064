"""``GET /registry/maintenance``: which mode a registry replica should be in
(docs/retention.md#replicas).

Each replica's runner (``scripts/run-registry``) asks it every ``poll_seconds`` with
``?service=<auth.token.service>&replica=<name>&mode=<readwrite|readonly>`` and the header its
configuration sends with notifications, ``Authorization: Bearer <REGISTRY_NOTIFICATIONS_TOKEN>``
(checked as ``POST /registry/notifications`` checks it). The answer: ``{"mode", "poll_seconds",
"retry_after"}`` (``retry_after``: seconds until the backend grants pushes again, 0 outside a
window). Refusals are JSON ``{"message"}`` and record nothing: 404 when notifications are not
configured (no token to check) or the service is no backend's, 401 for the token, 400 for a
missing replica name or an unknown mode.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from registries.backends import backend_for_service
from registries.maintenance import ReplicaMode
from registries.notifications import notifications_authorized
from registries.services import replica_report

MAX_NAME = 255


def _refuse(status: int, message: str) -> JsonResponse:
    return JsonResponse({"message": message}, status=status)


def replica_mode_view(request: HttpRequest) -> JsonResponse:
    """The module's docstring."""
    if request.method != "GET":
        response = _refuse(405, f"Method {request.method} not allowed: GET.")
        response["Allow"] = "GET"
        return response
    if not settings.REGISTRY_NOTIFICATIONS_TOKEN:
        return _refuse(
            404,
            "Registry maintenance needs REGISTRY_NOTIFICATIONS_TOKEN: the replicas' runners "
            "authenticate with it.",
        )
    if not notifications_authorized(request.headers.get("Authorization", "")):
        return _refuse(
            401, "Send the registry's notifications token: Authorization: Bearer <token>."
        )
    service = request.GET.get("service", "")
    backend = backend_for_service(service) if service else None
    if backend is None:
        return _refuse(404, f"No registry backend has the token service {service!r}.")
    name = request.GET.get("replica", "")
    if not 0 < len(name) <= MAX_NAME:
        return _refuse(400, f"replica must name the replica (1 to {MAX_NAME} characters).")
    mode = request.GET.get("mode", "")
    if mode not in ReplicaMode.values:
        return _refuse(400, f"mode must be one of {', '.join(ReplicaMode.values)}, not {mode!r}.")
    wanted = replica_report(backend, name=name, mode=mode)
    return JsonResponse(
        {
            "mode": wanted,
            "poll_seconds": settings.REGISTRY_GC_REPLICA_POLL_SECONDS,
            "retry_after": backend.push_retry_after(timezone.now()),
        }
    )
