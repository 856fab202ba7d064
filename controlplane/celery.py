"""The Celery application. Configuration comes from Django settings (the ``CELERY_`` names)."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect  # type: ignore[untyped-decorator]
def reuse_database_connections(**kwargs: Any) -> None:
    """Workers keep their database connections between tasks, for
    ``CELERY_WORKER_DATABASE_CONN_MAX_AGE`` seconds.

    Celery's Django fixup closes a connection before and after each task only when it is
    obsolete or unusable, and ``CONN_HEALTH_CHECKS`` checks it before its first use in a task, so
    a restarted PostgreSQL costs one reconnect, not a failed task. Web processes keep
    ``DATABASE_CONN_MAX_AGE`` (0 by default: the development server starts a thread per request).
    """
    from django.conf import settings

    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = settings.CELERY_WORKER_DATABASE_CONN_MAX_AGE
        database["CONN_HEALTH_CHECKS"] = True
