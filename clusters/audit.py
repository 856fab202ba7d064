"""The audit log: who changed what, one row per write, written in the write's transaction.

An ``AuditEvent`` is shaped like Buildkite's (``GET /v2/organizations/{org}/audit_events``):
``type`` in Buildkite's naming where one exists (``CLUSTER_CREATED``, ``CLUSTER_QUEUE_DELETED``,
``CLUSTER_TOKEN_CREATED``; ours otherwise, in the same style), the ``actor`` who made it, the
``subject`` it changed, the ``context`` it came from (the request's address and user agent) and
``data`` (what changed). Rows are written by ``clusters.services.audit_record`` only, never
updated, and deleted only by the retention task.

Who the actor is comes from where the write came from, not from each service's arguments: every
entry point (the REST API, the console, the webhook, the agent endpoints, commands) wraps its work
in ``acting_as(actor, context)``; anything else (tasks, the reconciler) is the system. The actor
lives in a ``contextvars.ContextVar``, so it is per thread and per task and cannot leak from one
request into the next.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.utils import timezone


class ActorType(models.TextChoices):
    USER = "USER", "User"
    API_TOKEN = "API_TOKEN", "API access token"
    WEBHOOK = "WEBHOOK", "Webhook delivery"
    AGENT = "AGENT", "Agent token"
    SYSTEM = "SYSTEM", "System"


@dataclass(frozen=True)
class Actor:
    """Who makes the writes: ``type`` (``ActorType``), a stable ``uuid`` (blank for the system)
    and a ``name`` a person recognises."""

    type: str
    uuid: str = ""
    name: str = ""


@dataclass(frozen=True)
class AuditContext:
    """Where the writes came from: ``type`` (``ApiContext``, ``WebContext``, ``WebhookContext``,
    ``CommandContext``, ``SystemContext``) and, for requests, the address and user agent."""

    type: str = "SystemContext"
    request_ip: str = ""
    request_user_agent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.request_ip:
            out["request_ip"] = self.request_ip
        if self.request_user_agent:
            out["request_user_agent"] = self.request_user_agent[:255]
        out.update(self.extra)
        return out


SYSTEM = Actor(ActorType.SYSTEM, "", "system")
SYSTEM_CONTEXT = AuditContext()

_current: contextvars.ContextVar[tuple[Actor, AuditContext]] = contextvars.ContextVar(
    "audit_actor", default=(SYSTEM, SYSTEM_CONTEXT)
)


@contextmanager
def acting_as(actor: Actor, context: AuditContext | None = None) -> Iterator[Actor]:
    """Attribute every audit row written inside the block to ``actor``."""
    token = _current.set((actor, context or SYSTEM_CONTEXT))
    try:
        yield actor
    finally:
        _current.reset(token)


@contextmanager
def actor_scope() -> Iterator[None]:
    """A scope (a request) in which ``act_as`` may name the actor for the rest of it; whatever
    it named is undone on leaving, so a thread that serves the next request starts as the
    system."""
    token = _current.set(_current.get())
    try:
        yield
    finally:
        _current.reset(token)


def act_as(actor: Actor, context: AuditContext | None = None) -> None:
    """Attribute the rest of the current ``actor_scope`` to ``actor``: for an entry point that
    learns who is calling part-way through (the REST framework authenticates in the view)."""
    _current.set((actor, context or SYSTEM_CONTEXT))


def current_actor() -> tuple[Actor, AuditContext]:
    return _current.get()


class AuditEvent(models.Model):
    """One write, as the audit log keeps it. Never updated (``save`` refuses)."""

    uuid = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    #: None for writes outside any organization (operators' changes: signing keys, backends).
    organization = models.ForeignKey(
        "clusters.Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="audit_events",
    )
    type = models.CharField(max_length=64)
    occurred_at = models.DateTimeField(default=timezone.now, editable=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_uuid = models.CharField(max_length=64, blank=True, default="")
    actor_name = models.CharField(max_length=255, blank=True, default="")
    subject_type = models.CharField(max_length=64)
    subject_uuid = models.CharField(max_length=255, blank=True, default="")
    subject_name = models.CharField(max_length=255, blank=True, default="")
    #: What changed: for an update, ``{"field": [old, new]}``; never a secret.
    data = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-uuid"]
        indexes = [
            # The organization's list, newest first, and its cursor.
            models.Index(fields=["organization", "-occurred_at", "-uuid"], name="audit_org_newest"),
            # Retention deletes the oldest rows.
            models.Index(fields=["occurred_at"], name="audit_occurred_at"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.subject_name or self.subject_uuid}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("Audit events are never updated.")
        super().save(*args, **kwargs)
