"""What the maintenance worker does on a backend's storage directly, from the registry
configuration file ``garbage-collect`` runs on (owner: issue 18's runner work): measure it, and
purge the uploads a client started and abandoned."""

from __future__ import annotations

from datetime import datetime, timedelta


def storage_bytes(config_path: str) -> int | None:
    """The bytes the storage of the configuration holds (filesystem storage: its folder); None
    where it cannot be measured from here."""
    raise NotImplementedError


def uploads_purge(config_path: str, *, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete the uploads started more than ``older_than`` ago; how many were deleted."""
    raise NotImplementedError
