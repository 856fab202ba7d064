"""``manage.py probe worker|beat``: a Kubernetes exec liveness probe for the Celery worker and
beat (controlplane/probes.py). Exits 0 when the process stamped its heartbeat within
``--max-age`` seconds, 1 otherwise, with one line saying which."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.probes import ROLES, heartbeat_age, heartbeat_path, heartbeat_state

#: A worker stamps every 10 s and beat at least once per reconcile interval (30 s): a few missed
#: heartbeats before the probe fails, as Kubernetes' failureThreshold adds its own.
DEFAULT_MAX_AGE = 120.0
#: A beat's state, as its heartbeat file holds it (controlplane/beat.py): both are healthy.
STATES = {
    "active": "active: holds the lock and sends the schedule",
    "standby": "standby: healthy, takes over when the active beat's lock expires",
}


class Command(BaseCommand):
    help = "Liveness of the Celery worker or beat on this host, from its heartbeat file."
    # A probe runs every few seconds: no system checks (their warnings are not its answer).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", choices=ROLES)
        parser.add_argument(
            "--max-age",
            type=float,
            default=DEFAULT_MAX_AGE,
            help=f"Seconds a heartbeat stays good (default {DEFAULT_MAX_AGE:.0f}).",
        )

    def handle(self, *args: Any, role: str, max_age: float, **options: Any) -> None:
        age = heartbeat_age(role)
        path = heartbeat_path(role)
        if age is None:
            raise CommandError(f"{role}: no heartbeat at {path} (not started, or stopped)")
        if age > max_age:
            raise CommandError(f"{role}: last heartbeat {age:.0f} s ago (> {max_age:.0f} s)")
        meaning = STATES.get(heartbeat_state(role))
        self.stdout.write(
            f"{role}: alive (heartbeat {age:.0f} s ago)" + (f", {meaning}" if meaning else "")
        )
