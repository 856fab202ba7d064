from django.apps import AppConfig
from django.db.backends.signals import connection_created

from controlplane.local_state import private_sqlite_files


class ControlplaneConfig(AppConfig):
    name = "controlplane"

    def ready(self) -> None:
        # A SQLite database file is private (0600), however SQLite created it: local_state.py.
        connection_created.connect(private_sqlite_files, dispatch_uid="private_sqlite_files")
        # Celery task outcomes in /metrics, and the worker's heartbeat for `manage.py probe worker`
        # (controlplane/metrics.py, controlplane/probes.py); harmless in other processes.
        from celery.signals import beat_init, worker_ready
        from django.core import checks

        from controlplane import metrics
        from controlplane.beat_settings import check_beat_settings
        from controlplane.celery import app
        from controlplane.probes import WorkerHeartbeat

        metrics.connect_task_signals()
        app.steps["worker"].add(WorkerHeartbeat)
        # METRICS_PORT: a worker's or beat's own metrics endpoint.
        worker_ready.connect(metrics.serve_on_port, weak=False, dispatch_uid="metrics.port")
        beat_init.connect(metrics.serve_on_port, weak=False, dispatch_uid="metrics.beat_port")
        # A killed beat replaced within two intervals of the shortest periodic task.
        checks.register(check_beat_settings)
