"""The environment a job on a queue receives, as plain data (no REST framework): the variables,
and which part of the platform set each one.

Two endpoints show it: the agent endpoint (``clusters.agent``, ``/v3/agent/environment``) to the
queue's agents, as JSON or ``export`` lines, and the REST API's queue environment
(``clusters.api``), whose serializer renders this object. Both render this one representation, so
they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusters.models import Queue
from clusters.selectors import EnvironmentEntry, agent_environment_for_queue


@dataclass(frozen=True)
class JobEnvironment:
    """``queue`` and its ``entries``, sorted by name (``agent_environment_for_queue``)."""

    queue: Queue
    entries: tuple[EnvironmentEntry, ...]

    @property
    def env(self) -> dict[str, str]:
        """Each variable's value, by name."""
        return {entry.name: entry.value for entry in self.entries}

    @property
    def sources(self) -> dict[str, str]:
        """Which part of the platform set each variable, by name."""
        return {entry.name: entry.source for entry in self.entries}

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape both endpoints answer with: the queue (id, key, hosted), ``env`` and
        ``sources``."""
        queue = self.queue
        return {
            "queue": {"id": str(queue.pk), "key": queue.key, "hosted": queue.hosted},
            "env": self.env,
            "sources": self.sources,
        }


def job_environment(queue: Queue) -> JobEnvironment:
    """What a job on ``queue`` receives (one query, for the cluster's published variables, on a
    hosted queue; ``queue.cluster`` should be loaded already)."""
    return JobEnvironment(queue, tuple(agent_environment_for_queue(queue=queue)))
