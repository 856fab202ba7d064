"""The heartbeat of a running maintenance window (``registries.services.maintenance``).

``heartbeat_at`` written only by the window's steps would stop during the ones that print
nothing for minutes (garbage-collect on a large storage, measuring it, verifying one large
registry), and the stale repair (``maintenance_schedule.collections_end_stale``) would end a
window that is still collecting: grant pushes and tell the replicas read-write under the
collector. So a thread beats for the whole window, whatever the step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connection
from django.utils import timezone

from registries.maintenance import GarbageCollection

logger = logging.getLogger("registries.services.maintenance")


class Heartbeat:
    """Every ``seconds``, a conditional UPDATE of ``heartbeat_at`` on the state the window is in
    (read under ``lock``, which the window holds while it changes state), then ``on_beat(state)``
    (the window keeps its push refusal ahead). Once the row is in another state (the repair ended
    it), ``ended`` is set: the window kills its collector and stops at its next write."""

    def __init__(
        self,
        collection: GarbageCollection,
        lock: threading.Lock,
        on_beat: Callable[[str], None],
        seconds: float,
    ) -> None:
        self.collection, self.lock, self.on_beat, self.seconds = collection, lock, on_beat, seconds
        self.ended = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="gc-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.seconds):
                with self.lock:
                    if not self.beat():
                        self.ended.set()
                        return
        finally:
            connection.close()  # the thread's own connection

    def beat(self) -> bool:
        """False once the row is in another state than the window's (a row the thread cannot
        see, or a failed write, is not that: the next beat tries again)."""
        state = self.collection.state
        rows = GarbageCollection.objects.filter(pk=self.collection.pk)
        try:
            if rows.filter(state=state).update(heartbeat_at=timezone.now()):
                self.on_beat(state)
                return True
            return not rows.exclude(state=state).exists()
        except Exception as exc:
            logger.warning(
                "registry.gc.heartbeat_failed",
                extra={"collection": str(self.collection.pk), "error": str(exc)},
            )
            return True
