"""The Celery application. Configuration comes from Django settings (the ``CELERY_`` names)."""

import os
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
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


app = Celery("controlplane", amqp=ControlPlaneAMQP)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect  # type: ignore[untyped-decorator]
def pool_database_connections(sender: Any = None, **kwargs: Any) -> None:
    """Workers keep their PostgreSQL connections in a pool (psycopg_pool, through Django's
    ``OPTIONS["pool"]``) of at most ``CELERY_WORKER_DATABASE_POOL_SIZE``, and never fewer than
    the worker's concurrency (a task holds its connection until it ends).

    Celery's Django fixup closes every connection before and after each task; with a pool,
    closing hands the connection back instead, and the next task reuses it. The pool checks a
    connection before handing it out (``CONN_HEALTH_CHECKS``), so a restarted PostgreSQL costs
    one reconnect, not a failed task. Only threads and solo workers keep the pool between
    tasks (the fixup closes a prefork child's pool after each task). Web processes keep
    ``DATABASE_CONN_MAX_AGE``.
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
