from django.apps import AppConfig
from django.db.backends.signals import connection_created

from controlplane.local_state import private_sqlite_files


class ControlplaneConfig(AppConfig):
    name = "controlplane"

    def ready(self) -> None:
        # A SQLite database file is private (0600), however SQLite created it: local_state.py.
        connection_created.connect(private_sqlite_files, dispatch_uid="private_sqlite_files")
