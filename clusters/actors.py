"""Who the entry points act as, for the audit log (``clusters.audit``).

Every entry point names its actor before it writes: the REST API the API token
(``ApiTokenAPIView.initial``), the console the staff user (``AuditActorMiddleware``), the webhook
the delivery (its view), management commands the command and the OS user (``AuditedCommand``).
Celery tasks and the reconciler name none: they are the system. ``AuditActorMiddleware`` also
opens a fresh scope for every request, so that what one request named never outlives it on a
thread that serves the next.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.management.base import BaseCommand
from django.http import HttpRequest, HttpResponseBase
from django.urls import NoReverseMatch, get_urlconf, reverse

from clusters.audit import Actor, ActorType, AuditContext, act_as, acting_as, actor_scope
from clusters.models import ApiToken
from controlplane.api.client_ip import client_ip


def request_context(request: Any, type: str, **extra: Any) -> AuditContext:
    """Where a request came from: its client's address (``TRUSTED_PROXY_COUNT`` applies) and
    user agent."""
    return AuditContext(
        type=type,
        request_ip=client_ip(request),
        request_user_agent=request.META.get("HTTP_USER_AGENT", ""),
        extra=extra,
    )


def api_token_actor(token: ApiToken) -> Actor:
    """An API token, named by its description; its user's name rides along (the token was
    loaded with its user, so naming it reads nothing)."""
    name = token.description
    user = token.user if ApiToken.user.is_cached(token) else None
    if user is not None:
        name = f"{name} ({user.get_username()})"
    return Actor(ActorType.API_TOKEN, str(token.pk), name)


def user_actor(user: AbstractBaseUser | AnonymousUser) -> Actor:
    return Actor(ActorType.USER, str(user.pk), user.get_username())


def webhook_actor(delivery_id: str) -> Actor:
    return Actor(ActorType.WEBHOOK, delivery_id, f"webhook delivery {delivery_id}")


def command_actor(command: str) -> tuple[Actor, AuditContext]:
    """A management command, run by an OS user (unknown in a container without one)."""
    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):
        os_user = ""
    name = f"manage.py {command}" + (f" ({os_user})" if os_user else "")
    context = AuditContext("CommandContext", extra={"command": command, "os_user": os_user})
    return Actor(ActorType.SYSTEM, "", name), context


class AuditedCommand(BaseCommand):
    """A management command whose writes are recorded as its own (``command_actor``), named
    after its module (``manage.py demo``)."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        command = type(self).__module__.rsplit(".", 1)[-1]
        with acting_as(*command_actor(command)):
            return super().execute(*args, **options)


class AuditActorMiddleware:
    """A fresh actor scope for every request; in the console, the signed-in staff user. Only
    the console's requests read the user, so no other path gains a query."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        #: The console's path in each URL configuration (None: it has no console).
        self._consoles: dict[object, str | None] = {}

    def _console(self, request: HttpRequest) -> str | None:
        urlconf = getattr(request, "urlconf", None) or get_urlconf() or settings.ROOT_URLCONF
        if urlconf not in self._consoles:
            try:
                self._consoles[urlconf] = reverse("admin:index", urlconf=urlconf)
            except NoReverseMatch:
                self._consoles[urlconf] = None
        return self._consoles[urlconf]

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with actor_scope():
            console = self._console(request)
            if console is not None and request.path_info.startswith(console):
                user = getattr(request, "user", None)
                if user is not None and user.is_authenticated:
                    act_as(user_actor(user), request_context(request, "WebContext"))
            return self.get_response(request)
