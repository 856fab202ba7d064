"""Celery workers and beat for the bench's stack, started as ``deploy/entrypoint`` starts them.

``celery -A controlplane worker --pool <pool> --concurrency <n> --without-gossip --without-mingle``
(the entrypoint's defaults are the threads pool and 4), with the stack's environment
(:attr:`bench.stack.Stack.env`, so ``bench.settings`` and its no-op task), each with a node name
and log file of its own; ``beat`` with a schedule file of its own. They are processes of the
stack (:meth:`bench.stack.Stack.spawn`): waited for until ready, stopped by pid with ``.stop()``
or when the stack stops.

The queues are the product's routing, read at run time (:func:`task_queue`), so the bench follows
whatever routes the settings give the tasks (a queue of their own for the canaries, say).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.stack import Stack
    from tests.support.stack import ManagedProcess

POOLS = ("threads", "prefork")
#: deploy/entrypoint's default concurrency (CELERY_WORKER_CONCURRENCY).
CONCURRENCY = 4

_numbers = itertools.count(1)


def _environment(stack: Stack, environment: Mapping[str, str] | None) -> dict[str, str]:
    return {**stack.env, **(environment or {})}


def worker_argv(*, name: str, pool: str, concurrency: int, queues: Iterable[str] = ()) -> list[str]:
    """The worker's command line: the entrypoint's, with a node name (two workers side by side)
    and, if given, the queues it consumes (``-Q``; otherwise Celery's default queue)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
    argv = [
        sys.executable, "-m", "celery", "-A", "controlplane", "worker",
        "--loglevel", "INFO", "--pool", pool, "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle", "--hostname", f"{name}@%h",
    ]  # fmt: skip
    queues = list(queues)
    if queues:
        argv += ["--queues", ",".join(queues)]
    return argv


def worker(
    stack: Stack,
    *,
    pool: str = "threads",
    concurrency: int = CONCURRENCY,
    queues: Iterable[str] = (),
    environment: Mapping[str, str] | None = None,
    name: str = "worker",
) -> ManagedProcess:
    """Start a Celery worker for ``stack`` and wait until it consumes (its `` ready.`` line)."""
    unique = f"celery-{name}-{pool}-{next(_numbers)}"
    return stack.spawn(
        unique,
        worker_argv(name=unique, pool=pool, concurrency=concurrency, queues=queues),
        is_ready=lambda process: " ready." in process.log(),
        env=_environment(stack, environment),
    )


def beat(stack: Stack, *, environment: Mapping[str, str] | None = None) -> ManagedProcess:
    """Start Celery beat for ``stack`` with a schedule of its own, so that every entry's first
    run is one interval after the start, and wait until it ticks (its heartbeat's ``Starting``).
    On the stack's Redis broker beat runs RedBeat (``controlplane.beat_settings``), whose
    schedule and last runs live in Redis: they are deleted first, as a new schedule file is for
    Celery's file scheduler."""
    unique = f"celery-beat-{next(_numbers)}"
    schedule = Path(stack.workdir) / f"{unique}-schedule"
    _forget_redbeat(stack.redis_url)
    return stack.spawn(
        unique,
        [sys.executable, "-m", "celery", "-A", "controlplane", "beat", "--loglevel", "INFO",
         "--schedule", str(schedule)],
        is_ready=lambda process: "beat: Starting" in process.log(),
        env={**_environment(stack, environment), "CELERY_BEAT_SCHEDULE_FILENAME": str(schedule)},
    )  # fmt: skip


def _forget_redbeat(broker_url: str) -> None:
    """Delete RedBeat's lock, schedule and entries from the broker's Redis database."""
    from controlplane.beat_settings import KEY_PREFIX, uses_redis

    if not uses_redis(broker_url):
        return
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def process_ids(process: ManagedProcess) -> list[int]:
    """The worker's process id, then its pool's children (prefork's processes)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return [process.pid, *(int(pid) for pid in children.read_text().split())]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def task_queue(task_name: str) -> str:
    """The queue the product's routing sends ``task_name`` to (Django must be configured)."""
    from controlplane.celery import app

    route = app.amqp.router.route({}, task_name, (), {})
    return str(route["queue"].name)


def purge(queues: Iterable[str], url: str | None = None) -> int:
    """Drop every message waiting in ``queues`` of the broker (``url``, or the app's) between
    measures, with no worker running; how many were dropped."""
    from controlplane.celery import app

    dropped = 0
    with app.connection_for_write(url) as connection:
        channel = connection.default_channel
        for queue in set(queues):
            dropped += channel.queue_purge(queue) or 0
    return dropped


def waiting(queue: str, url: str | None = None) -> int:
    """How many messages wait in ``queue`` of the broker (``url``, or the app's); reserved ones
    are not counted."""
    from controlplane.celery import app

    with app.connection_for_read(url) as connection:
        return int(connection.default_channel.queue_declare(queue).message_count)
