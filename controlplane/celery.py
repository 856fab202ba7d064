"""The Celery application. Configuration comes from Django settings (the ``CELERY_`` names)."""

import os
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.fixups.django import DjangoFixup, DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun, worker_init
from kombu.connection import Connection as KombuConnection

from controlplane.logging import bind_context, clear_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")


class Connection(KombuConnection):
    """A broker connection that, once lost, is tried again every second, then less often, but
    never less than every ``CELERY_BROKER_RECONNECT_MAX_SECONDS``.

    The worker and beat reconnect through ``ensure_connection`` with kombu's default backoff,
    2 s growing to 30 s between tries, and no setting changes it: after a long Redis outage the
    worker could sit out 30 s with Redis back, and the reconciler's promise (a lost message
    re-sent within one interval) would not hold. Callers that pass their own intervals keep them.
    """

    def ensure_connection(self, *args: Any, **kwargs: Any) -> Any:
        from django.conf import settings

        if len(args) <= 2:  # (errback, max_retries): the intervals are kombu's defaults
            kwargs.setdefault("interval_start", 1)
            kwargs.setdefault("interval_step", 1)
            kwargs.setdefault("interval_max", settings.CELERY_BROKER_RECONNECT_MAX_SECONDS)
        return super().ensure_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


class ControlPlaneAMQP(AMQP):
    Connection = Connection


class WorkerFixup(DjangoWorkerFixup):
    """Celery's Django fixup for workers, except at task boundaries: there it hands the task's
    database connections back to the pool (``close()`` on a pooled connection does), and never
    closes the pool itself, which Celery does in prefork children after every task (celery#10554)
    so that each task opened a new PostgreSQL connection. A prefork child now keeps its
    connection from one task to the next, as a threads worker does. A child still drops the pool
    it inherits from its parent when it starts (``on_worker_process_init``, unchanged)."""

    def on_task_prerun(self, sender: Any, **kwargs: Any) -> None:
        if not getattr(sender.request, "is_eager", False):
            self.release_connections()

    def on_task_postrun(self, sender: Any, **kwargs: Any) -> None:
        if not getattr(sender.request, "is_eager", False):
            self.release_connections()
            self.close_cache()

    def release_connections(self) -> None:
        """Close this thread's connections: a pooled one goes back to its pool, which checks it
        before handing it out again (``CONN_HEALTH_CHECKS``), so a restarted PostgreSQL costs a
        reconnect, not a failed task."""
        for connection in self._db.connections.all(initialized_only=True):
            try:
                connection.close()
            except self.interface_errors:
                pass  # already closed: nothing to give back
            except self.DatabaseError as exc:  # as Celery's fixup: a lost connection is closed
                if "closed" not in str(exc) and "not connected" not in str(exc):
                    raise


class ControlPlaneDjangoFixup(DjangoFixup):
    """Celery's Django fixup with ``WorkerFixup`` for workers."""

    _worker_fixup: DjangoWorkerFixup | None

    @property
    def worker_fixup(self) -> DjangoWorkerFixup:
        if self._worker_fixup is None:
            self._worker_fixup = WorkerFixup(self.app)
        return self._worker_fixup

    @worker_fixup.setter
    def worker_fixup(self, value: DjangoWorkerFixup) -> None:
        self._worker_fixup = value


def django_fixup(app: Celery) -> DjangoFixup:
    """Installs ``ControlPlaneDjangoFixup`` in place of Celery's built-in Django fixup."""
    fixup: DjangoFixup = ControlPlaneDjangoFixup(app).install()
    return fixup


app = Celery("controlplane", amqp=ControlPlaneAMQP, fixups=["controlplane.celery:django_fixup"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect  # type: ignore[untyped-decorator]
def pool_database_connections(sender: Any = None, **kwargs: Any) -> None:
    """Workers keep their PostgreSQL connections in a pool (psycopg_pool, through Django's
    ``OPTIONS["pool"]``) of at most ``CELERY_WORKER_DATABASE_POOL_SIZE``, and never fewer than
    the worker's concurrency (a task holds its connection until it ends).

    The fixup (``WorkerFixup``) closes every connection before and after each task; with a
    pool, closing hands the connection back instead, and the next task reuses it, in threads,
    solo and prefork workers alike. The pool checks a connection before handing it out
    (``CONN_HEALTH_CHECKS``), so a restarted PostgreSQL costs one reconnect, not a failed task.
    Web processes keep ``DATABASE_CONN_MAX_AGE``.
    """
    from django.conf import settings

    concurrency = getattr(sender, "concurrency", None)
    size = settings.CELERY_WORKER_DATABASE_POOL_SIZE
    if isinstance(concurrency, int):
        size = max(size, concurrency)
    for database in settings.DATABASES.values():
        if database["ENGINE"] == "django.db.backends.postgresql":
            # Django's pool and persistent connections exclude each other; the pool checks each
            # connection before handing it out because CONN_HEALTH_CHECKS is on.
            database["CONN_MAX_AGE"] = 0
            database["CONN_HEALTH_CHECKS"] = True
            database.setdefault("OPTIONS", {})["pool"] = {
                "min_size": 1,
                "max_size": size,
                "timeout": 10,
            }


@task_prerun.connect  # type: ignore[untyped-decorator]
def bind_task_to_logs(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """Every record a task logs carries its ``task_id`` and ``task_name`` (controlplane/logging.py),
    as every record of a request carries the request id. Signals run in the thread that runs
    the task, whatever the pool."""
    bind_context(task_id=str(task_id), task_name=str(getattr(task, "name", "")))


@task_postrun.connect  # type: ignore[untyped-decorator]
def unbind_task_from_logs(**kwargs: Any) -> None:
    clear_context()
