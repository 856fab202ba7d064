"""A named database lease (a row in ``registries_lease``) that at most one process holds until it
expires: the reconciler's guard against a second Celery beat, or a pass that outlives its
interval."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from registries.models import Lease


def lease_acquire(name: str, *, holder: str, ttl: timedelta) -> bool:
    """Take the lease ``name`` for ``ttl`` if it is free, expired or already ``holder``'s.

    One conditional UPDATE decides: under PostgreSQL's row lock a concurrent taker waits, then
    re-reads the row and finds it taken. Works on SQLite too (writes are serialised there).
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            Lease.objects.get_or_create(name=name, defaults={"expires_at": now})
    except IntegrityError:
        pass  # created by a concurrent taker
    taken = Lease.objects.filter(Q(expires_at__lte=now) | Q(holder=holder), name=name).update(
        holder=holder, expires_at=now + ttl
    )
    return taken == 1


def lease_release(name: str, *, holder: str, progress: dict[str, Any] | None = None) -> None:
    """Let go of the lease ``name`` if ``holder`` still holds it, leaving ``progress`` (when
    given) for the next holder: a holder whose lease expired or was taken over writes nothing."""
    fields: dict[str, Any] = {"expires_at": timezone.now()}
    if progress is not None:
        fields["progress"] = progress
    Lease.objects.filter(name=name, holder=holder).update(**fields)


def lease_progress(name: str) -> dict[str, Any]:
    """What the last holder of the lease ``name`` left for the next one ({} if nothing)."""
    progress = Lease.objects.filter(name=name).values_list("progress", flat=True).first()
    return progress or {}


def lease_holder(name: str) -> str:
    """Who holds the lease now ("" if nobody)."""
    lease = Lease.objects.filter(name=name, expires_at__gt=timezone.now()).first()
    return lease.holder if lease else ""


def this_process() -> str:
    """A holder name for this process: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
