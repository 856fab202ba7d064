"""Liveness of the Celery worker and beat, for a Kubernetes exec probe
(``python manage.py probe worker`` / ``probe beat``; docs/operations.md#health-and-probes).

Each process stamps a heartbeat file in ``PROBE_HEARTBEAT_DIR`` from its own main loop: the
worker from its timer (a bootstep, every ``HEARTBEAT_SECONDS``), beat on every tick of its
scheduler (at least once per schedule interval). A process whose loop is stuck stops stamping,
and the probe fails once the file is older than its ``--max-age``. Neither depends on the broker
or the database being up: a liveness probe that failed while Redis is down would restart every
worker for nothing, and they reconnect by themselves (controlplane.celery.Connection).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.beat import PersistentScheduler
from django.conf import settings

WORKER = "worker"
BEAT = "beat"
ROLES = (WORKER, BEAT)
#: How often a worker stamps its heartbeat.
HEARTBEAT_SECONDS = 10.0


def heartbeat_path(role: str) -> Path:
    return Path(settings.PROBE_HEARTBEAT_DIR) / f"celery-{role}.heartbeat"


def heartbeat(role: str, state: str = "") -> None:
    """Stamp ``role``'s heartbeat file (its mtime is the heartbeat). With ``state`` (a beat's
    ``active`` or ``standby``, controlplane/beat.py), the file holds it for the probe to show;
    it is replaced whole, so the probe never reads half of it."""
    path = heartbeat_path(role)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not state:
        path.touch()
        return
    written = path.with_name(f".{path.name}.{os.getpid()}")
    written.write_text(state)
    os.replace(written, path)


def heartbeat_state(role: str) -> str:
    """What ``role`` last stamped with its heartbeat ("" if nothing, or no heartbeat)."""
    try:
        return heartbeat_path(role).read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def heartbeat_age(role: str, *, now: float | None = None) -> float | None:
    """Seconds since ``role`` last stamped its heartbeat; None if it never did."""
    try:
        stamped = heartbeat_path(role).stat().st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now is None else now) - stamped)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """A worker bootstep: stamps the worker's heartbeat from the worker's timer while it runs,
    and removes the file when the worker stops (a stopped worker is not alive)."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        heartbeat(WORKER)
        self.timer_entry = parent.timer.call_repeatedly(HEARTBEAT_SECONDS, heartbeat, (WORKER,))

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
        heartbeat_path(WORKER).unlink(missing_ok=True)


class HeartbeatScheduler(PersistentScheduler):
    """Celery beat's default scheduler, stamping beat's heartbeat on every tick
    (``CELERY_BEAT_SCHEDULER``)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval: float = super().tick(*args, **kwargs)
        heartbeat(BEAT)
        return interval
