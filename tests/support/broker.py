"""Reads what was really published to the Celery broker (filesystem folders or Redis).

Draining the queues consumes the messages, so a test sees exactly the messages published since
the last drain, and no worker runs them.
"""

from __future__ import annotations

from queue import Empty

from controlplane.celery import app


def drain(*queues: str) -> list[tuple[str, tuple[object, ...]]]:
    """Take every message off ``queues`` (by default every queue the app defines: the default
    queue, then the canaries'); return ``(task name, args)`` for each."""
    taken: list[tuple[str, tuple[object, ...]]] = []
    with app.connection_for_read() as connection:
        for name in queues or tuple(app.amqp.queues):
            queue = connection.SimpleQueue(name)
            try:
                while True:
                    try:
                        message = queue.get(block=False)
                    except Empty:
                        break
                    args, _kwargs, _embed = message.decode()
                    taken.append((message.headers["task"], tuple(args)))
                    message.ack()
            finally:
                queue.close()
    return taken
