"""What the maintenance worker does on a backend's storage directly, from the registry
configuration file ``garbage-collect`` runs on: measure it, and purge the uploads a client
started and abandoned.

Only filesystem storage is reachable from here (the worker mounts the replicas' folder). On other
drivers (S3 and the like) the bucket is measured by the registry's own accounting, not here, and
abandoned uploads are left to Distribution's purger (``storage.maintenance.uploadpurging``,
which ``registry_config`` always turns on): docs/retention.md#upload-purging.

The configuration holds secrets (S3 keys, ``http.secret``): only the storage section is read,
and nothing of it is logged or put in an error message but the folder's path.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from registries.drivers.collector import CollectorError

logger = logging.getLogger("registries.drivers")

#: Distribution's filesystem driver's folder when the configuration names none.
DEFAULT_ROOT = "/var/lib/registry"
#: Where Distribution keeps everything under the driver's root.
DATA_PATH = Path("docker", "registry", "v2")
UPLOADS = "_uploads"


class StorageConfigError(CollectorError):
    """The configuration file cannot be read or has no storage section: a ``CollectorError``,
    since garbage-collect cannot run on it either, and the window handles both alike."""


def _storage_section(config_path: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(Path(config_path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        # The parser's message may quote the file's lines, secrets among them.
        raise StorageConfigError(
            f"Cannot read the registry configuration {config_path}: {type(exc).__name__}"
        ) from None
    storage = config.get("storage") if isinstance(config, dict) else None
    if not isinstance(storage, dict):
        raise StorageConfigError(f"The registry configuration {config_path} has no storage")
    return storage


def storage_root(config_path: str) -> Path | None:
    """The folder Distribution keeps its data in (``<rootdirectory>/docker/registry/v2``) for
    filesystem storage; None for any other driver."""
    storage = _storage_section(config_path)
    if "filesystem" not in storage:
        return None
    parameters = storage.get("filesystem") or {}
    return Path(str(parameters.get("rootdirectory") or DEFAULT_ROOT)) / DATA_PATH


def storage_bytes(config_path: str) -> int | None:
    """The bytes the storage of the configuration holds (filesystem storage: every file's size
    under its folder, 0 before anything was pushed); None where it cannot be measured from here.

    Files, not the blocks or folders they take: what a collection frees is then exactly the size
    of the blobs it deleted, which is what its record compares with the deleted layers.
    """
    root = storage_root(config_path)
    if root is None:
        return None
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # an upload finished or purged meanwhile
                continue
    return total


def _started_at(upload: Path) -> datetime | None:
    """When the upload began, from its ``startedat`` file (RFC 3339, as Distribution writes
    it); None when it is missing or unreadable, which Distribution's purger leaves alone too."""
    try:
        started = datetime.fromisoformat((upload / "startedat").read_text().strip())
    except (OSError, ValueError):
        return None
    return started if started.tzinfo is not None else None


def _is_upload_id(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def _remove(upload: Path) -> int:
    """Delete an upload's folder: 1, or 0 when it cannot be (logged; the next purge retries)."""
    try:
        shutil.rmtree(upload)
    except FileNotFoundError:  # its client finished it, or a replica's purger was first
        return 0
    except OSError as exc:
        logger.warning(
            "registry.uploads.purge_failed", extra={"upload": str(upload), "error": str(exc)}
        )
        return 0
    return 1


def uploads_purge(config_path: str, *, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete the uploads started more than ``older_than`` ago; how many were deleted.

    The rule is Distribution's purger's: every ``repositories/**/_uploads/<uuid>`` folder whose
    ``startedat`` is before ``now - older_than`` goes, one without a readable ``startedat``
    stays. Filesystem storage only (0 otherwise: the registry's own purger covers the rest).
    Distribution starts its purger after a random delay of up to an hour and then every
    ``interval``; the maintenance window calls this so that a collection never leaves behind
    what is already abandoned.
    """
    root = storage_root(config_path)
    if root is None:
        return 0
    cutoff = (now or datetime.now(UTC)) - older_than
    purged = 0
    for folder, subfolders, _ in os.walk(root / "repositories"):
        if Path(folder).name == UPLOADS:
            for name in subfolders:
                upload = Path(folder, name)
                started = _started_at(upload)
                if _is_upload_id(name) and started is not None and started < cutoff:
                    purged += _remove(upload)
            subfolders.clear()
        else:
            # A repository's other reserved folders (_layers, _manifests) hold no uploads.
            subfolders[:] = [s for s in subfolders if not s.startswith("_") or s == UPLOADS]
    if purged:
        logger.info(
            "registry.uploads.purged",
            extra={"root": str(root), "count": purged, "older_than": older_than.total_seconds()},
        )
    return purged


def blob_cache_forget(config_path: str, digests: Iterable[str]) -> int:
    """Drop the registry's blob-descriptor cache entries (Redis) of the blobs a collection
    deleted, so that a later push of the same layer uploads it again (distribution#2945); how
    many were dropped. Placeholder until the storage-safety work lands."""
    return 0
