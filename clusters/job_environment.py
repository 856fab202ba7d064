"""The environment a job on a queue receives, as plain data (no REST framework): the variables,
and which part of the platform set each one.

Two endpoints show it: the agent endpoint (``clusters.agent``, ``/v3/agent/environment``) to the
queue's agents, as JSON or ``export`` lines, and the REST API's queue environment
(``clusters.api``), whose serializer renders this object. Both render this one representation, so
they cannot drift apart.

Whatever the database holds, a job never receives a reserved name
(``clusters.selectors.variable_reserved``: ``LD_PRELOAD``, ``BASH_ENV``, the agent's own
``BUILDKITE_AGENT_*`` ...), a name that is not an upper-case shell name (``SHELL_NAME``), or a
value with a NUL character: ``agent_environment_set`` and the table's constraint refuse them,
but a row can reach the table another way (a migration, the shell, a restored backup, a database
without the constraint), and this is the last place before a job evaluates it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from clusters.models import Queue
from clusters.selectors import (
    PLATFORM_SOURCE,
    EnvironmentEntry,
    agent_environment_for_queue,
    variable_reserved,
)

logger = logging.getLogger("clusters.job_environment")

#: What the agent hook takes as a name (its ``export NAME=$'value'`` line check): a row named
#: otherwise (lower case, a space) would make the hook refuse the whole environment.
SHELL_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


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
    hosted queue; ``queue.cluster`` should be loaded already). Reserved names, names that are not
    upper-case shell names and NUL values are left out, and logged for the operators."""
    entries = []
    for entry in agent_environment_for_queue(queue=queue):
        computed = entry.source == PLATFORM_SOURCE  # never a stored row (the selector)
        unfit = not SHELL_NAME.fullmatch(entry.name) or "\x00" in entry.value
        if not computed and (unfit or variable_reserved(entry.name)):
            logger.warning(
                "job_environment.variable_withheld",
                extra={
                    "cluster_id": str(queue.cluster_id),
                    "variable": entry.name,
                    "source": entry.source,
                },
            )
            continue
        entries.append(entry)
    return JobEnvironment(queue, tuple(entries))
