"""Rate limits as Buildkite's REST API has them: two budgets per request, one for the
organization (``RateLimit-*`` headers, scope ``rest``) and one for the caller's token
(``RateLimit-User-*``, scope ``rest_user``), counted per fixed window in the cache (Redis in
production, so every web process shares the counts). Every response carries both header sets;
a request over either budget gets 429."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from rest_framework import status
from rest_framework.exceptions import APIException

WARNING = "You have exceeded your API rate limit."
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """``limit`` requests per ``window`` seconds for ``key``."""

    scope: str  # "rest" or "rest_user", as Buildkite names them
    header: str  # "RateLimit" or "RateLimit-User"
    key: str
    limit: int
    window: int = 60


@dataclass(frozen=True)
class Usage:
    budget: Budget
    current: int
    reset: int  # seconds until the window ends

    @property
    def exceeded(self) -> bool:
        return self.current > self.budget.limit

    def headers(self) -> dict[str, str]:
        prefix = self.budget.header
        headers = {
            f"{prefix}-Scope": self.budget.scope,
            f"{prefix}-Remaining": str(max(0, self.budget.limit - self.current)),
            f"{prefix}-Limit": str(self.budget.limit),
            f"{prefix}-Reset": str(self.reset),
        }
        if self.current >= self.budget.limit:
            headers[f"{prefix}-Warning"] = WARNING
        return headers


def consume(budget: Budget, now: float | None = None) -> Usage | None:
    """Count one request against ``budget`` and say where it stands; None when the counter
    cannot be reached. Rate limits protect the service, so an unreachable cache lets requests
    through (logged) rather than failing every one of them."""
    now = time.time() if now is None else now
    window_start = int(now // budget.window) * budget.window
    key = f"{settings.API_RATE_LIMIT_KEY_PREFIX}:{budget.scope}:{budget.key}:{window_start}"
    try:
        try:
            current = cache.incr(key)  # the common case: the window's counter exists
        except ValueError:  # the window's first request (or another request's, meanwhile)
            first = cache.add(key, 1, timeout=budget.window + 1)
            current = 1 if first else cache.incr(key)
    except Exception:
        logger.warning("ratelimit.unavailable", exc_info=True, extra={"scope": budget.scope})
        return None
    return Usage(
        budget=budget, current=current, reset=max(1, window_start + budget.window - int(now))
    )


class RateLimited(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, usage: Usage) -> None:
        super().__init__(
            f"{WARNING} Please wait {usage.reset} seconds before making more requests."
        )
        self.wait = usage.reset
        self.extra = {
            "scope": usage.budget.scope,
            "limit": usage.budget.limit,
            "current": usage.current,
            "reset": usage.reset,
        }
