"""Writing the audit log (``clusters.audit``): one row per service write, in its transaction."""

from __future__ import annotations

from typing import Any

from clusters.audit import AuditEvent, current_actor
from clusters.models import Organization


def audit_record(
    *,
    type: str,
    organization: Organization | None,
    subject_type: str,
    subject_uuid: object = "",
    subject_name: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit row for the write the caller is making, attributed to the current actor
    (``clusters.audit.acting_as``; the system by default). Call it inside the write's
    transaction, so that a write that rolls back leaves no row. ``data`` says what changed and
    never holds a secret."""
    actor, context = current_actor()
    event = AuditEvent(
        organization=organization,
        type=type,
        actor_type=actor.type,
        actor_uuid=actor.uuid,
        actor_name=actor.name[:255],
        subject_type=subject_type,
        subject_uuid=str(subject_uuid),
        subject_name=subject_name[:255],
        data=data or {},
        context=context.as_json(),
    )
    event.save(force_insert=True)
    return event


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """``{"field": [old, new]}`` for each field whose value differs."""
    return {
        name: [before.get(name), value]
        for name, value in after.items()
        if before.get(name) != value
    }
