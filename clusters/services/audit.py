"""Writing the audit log (``clusters.audit``): one row per service write, in its transaction."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from clusters.audit import AuditEvent, current_actor
from clusters.models import Organization


def audit_record(
    *,
    type: str,
    organization: Organization | int | None,
    subject_type: str,
    subject_uuid: object = "",
    subject_name: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit row for the write the caller is making, attributed to the current actor
    (``clusters.audit.acting_as``; the system by default). Call it inside the write's
    transaction, so that a write that rolls back leaves no row. ``organization`` is the row or
    its id (a caller holding only the id reads nothing more). ``data`` says what changed and
    never holds a secret; it is stored as JSON (``jsonable``)."""
    actor, context = current_actor()
    event = AuditEvent(
        type=type,
        actor_type=actor.type,
        actor_uuid=actor.uuid,
        actor_name=actor.name[:255],
        subject_type=subject_type,
        subject_uuid=str(subject_uuid),
        subject_name=subject_name[:255],
        data=jsonable(data or {}),
        context=context.as_json(),
    )
    if isinstance(organization, Organization):
        event.organization = organization
    else:
        event.organization_id = organization
    event.save(force_insert=True)
    return event


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """``{"field": [old, new]}`` for each field whose value differs."""
    return {
        name: [before.get(name), value]
        for name, value in after.items()
        if before.get(name) != value
    }


def snapshot(obj: models.Model, *names: str) -> dict[str, Any]:
    """The fields ``names`` of ``obj`` as JSON values, for ``data`` and for ``changes``: a
    foreign key as its id (read from the row, not fetched), times in ISO 8601, UUIDs as text."""
    values = {}
    for name in names:
        field = obj._meta.get_field(name)
        values[name] = getattr(obj, getattr(field, "attname", name))
    return jsonable(values)


def jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as the JSON column stores it (times, UUIDs and decimals as text)."""
    result: dict[str, Any] = json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    return result


def audit_prune(*, now: datetime | None = None) -> int:
    """Delete the audit events older than ``AUDIT_RETENTION_DAYS`` (none if it is 0), oldest
    first, ``AUDIT_PRUNE_BATCH`` at a time, each batch its own short transaction; how many went.
    Retention is housekeeping, not a change anyone made: it writes no audit row."""
    days: int = settings.AUDIT_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    expired = AuditEvent.objects.filter(occurred_at__lt=cutoff).order_by("occurred_at", "uuid")
    deleted = 0
    while True:
        batch = list(expired.values_list("pk", flat=True)[: settings.AUDIT_PRUNE_BATCH])
        if not batch:
            return deleted
        deleted += AuditEvent.objects.filter(pk__in=batch).delete()[0]
