"""``/healthz``, ``/readyz`` and ``/metrics`` (docs/operations.md#health-and-probes).

- ``/healthz``: the process answers. No dependency, so that a database or registry outage never
  makes Kubernetes restart every web process.
- ``/readyz``: each readiness check by name (the database and the broker here; the registries
  app adds the signing key and the registry), run at once in threads, each given
  ``HEALTH_CHECK_TIMEOUT_SECONDS``; 503 when any fails. The body names a failure's kind, not its
  text (which may hold internal hosts): the log has the text.
- ``/metrics``: Prometheus's text format (controlplane/metrics.py), only with
  ``Authorization: Bearer <METRICS_TOKEN>``; 404 when no token is configured.

``ProbeMiddleware`` answers these three paths first, before the other middleware: probes and
scrapers reach a pod by its address, which is not in ``DJANGO_ALLOWED_HOSTS``, over plain HTTP,
which ``SECURE_SSL_REDIRECT`` would redirect; and none of them needs a session or CSRF.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from controlplane import metrics
from controlplane.api.authentication import authorization_header

logger = logging.getLogger(__name__)

Check = Callable[[], object]

_checks: dict[str, Check] = {}


def register_check(name: str, check: Check) -> None:
    """Add a readiness check: a function that returns when the dependency is usable and raises
    otherwise, within ``HEALTH_CHECK_TIMEOUT_SECONDS`` if it can (it is abandoned then)."""
    _checks[name] = check


def check_database() -> None:
    """A ``SELECT 1`` on a connection of this thread's own, closed afterwards."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


def check_broker() -> None:
    """Connect to the broker once, without kombu's retries."""
    from controlplane.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0)


register_check("database", check_database)
register_check("broker", check_broker)

# The checks run in threads of their own, so that a dependency that hangs costs its timeout, not
# the sum of them; an abandoned check finishes (or times out) in the background.
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz")


def readiness() -> tuple[bool, dict[str, dict[str, Any]]]:
    """Run every check at once; ``(all passed, {name: {"ok", "ms", ["error"]}})``."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    started = time.perf_counter()
    futures = {name: _executor.submit(_timed, name, check) for name, check in _checks.items()}
    wait(futures.values(), timeout=timeout)
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        if future.done():
            results[name] = future.result()
        else:
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            logger.warning("readyz.check_timed_out", extra={"check": name, "timeout_s": timeout})
            results[name] = {"ok": False, "ms": elapsed, "error": "timeout"}
    return all(result["ok"] for result in results.values()), results


def _timed(name: str, check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:
        logger.warning("readyz.check_failed", extra={"check": name, "error": repr(exc)})
        result: dict[str, Any] = {"ok": False, "error": type(exc).__name__}
        detail = getattr(exc, "detail_by_part", None)
    else:
        result = {"ok": True}
    if isinstance(detail, dict):  # a check of several parts (the registry backends) names each
        result["parts"] = detail
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    ok, checks = readiness()
    return JsonResponse(
        {"status": "ok" if ok else "failing", "checks": checks}, status=200 if ok else 503
    )


def metrics_view(request: HttpRequest) -> HttpResponse:
    token: str = settings.METRICS_TOKEN
    if not token:
        return JsonResponse({"message": "Not Found"}, status=404)
    if not metrics.authorized(authorization_header(request), token):
        response = JsonResponse(
            {"message": "Send Authorization: Bearer <METRICS_TOKEN>."}, status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics_view,
}


class ProbeMiddleware:
    """Answers ``PROBES`` before any other middleware (see the module's docstring); GET and
    HEAD only."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBES.get(request.path_info)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse({"message": "Method not allowed."}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        response = view(request)
        response["Cache-Control"] = "no-store"
        if request.method == "HEAD":
            response.content = b""
        return response
