"""What the maintenance worker does on a backend's storage directly, from the registry
configuration file ``garbage-collect`` runs on: measure it, and purge the uploads a client
started and abandoned.

Only filesystem storage is reachable from here (the worker mounts the replicas' folder). On other
drivers (S3 and the like) the bucket is measured by the registry's own accounting, not here, and
abandoned uploads are left to Distribution's purger (``storage.maintenance.uploadpurging``,
which ``registry_config`` always turns on): docs/retention.md#upload-purging.

The configuration holds secrets (S3 keys, ``http.secret``, the Redis password): only the storage
and redis sections are read, and nothing of them is logged or put in an error message but the
folder's path and the Redis address.

Also read from the storage: the tags and their manifests' media types (whether
``--delete-untagged`` is safe, ``registries.maintenance_selectors``); and the Redis
blob-descriptor cache is cleared of the blobs a collection deleted (``blob_cache_forget``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import yaml

from registries.drivers.collector import CollectorError
from registries.inventory import INDEX_MEDIA_TYPES

logger = logging.getLogger("registries.drivers")

#: Distribution's filesystem driver's folder when the configuration names none.
DEFAULT_ROOT = "/var/lib/registry"
#: Where Distribution keeps everything under the driver's root.
DATA_PATH = Path("docker", "registry", "v2")
UPLOADS = "_uploads"


class StorageConfigError(CollectorError):
    """The configuration file cannot be read or has no storage section: a ``CollectorError``,
    since garbage-collect cannot run on it either, and the window handles both alike."""


def _config(config_path: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(Path(config_path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        # The parser's message may quote the file's lines, secrets among them.
        raise StorageConfigError(
            f"Cannot read the registry configuration {config_path}: {type(exc).__name__}"
        ) from None
    return config if isinstance(config, dict) else {}


def _storage_section(config_path: str) -> dict[str, Any]:
    storage = _config(config_path).get("storage")
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


@dataclass(frozen=True)
class TaggedManifest:
    """A tag as the storage holds it: ``repository:tag`` points to ``digest`` of ``media_type``
    ("" when its manifest cannot be read or names no type it can be told by)."""

    repository: str
    tag: str
    digest: str
    media_type: str

    @property
    def maybe_index(self) -> bool:
        """An index, or a manifest of a type not known (it might be one)."""
        return self.media_type in INDEX_MEDIA_TYPES or not self.media_type


def _read_link(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _media_type(root: Path, digest: str) -> str:
    """A manifest blob's media type: its ``mediaType``, else (OCI lets it be left out) what
    its fields say it is; "" when it cannot be read."""
    algorithm, _, hexdigest = digest.partition(":")
    if not hexdigest or not hexdigest.isalnum() or not algorithm.isalnum():
        return ""
    try:
        document = json.loads(
            (root / "blobs" / algorithm / hexdigest[:2] / hexdigest / "data").read_bytes()
        )
    except (OSError, ValueError):
        return ""
    if not isinstance(document, dict):
        return ""
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in document:
        return "application/vnd.oci.image.index.v1+json"
    if "layers" in document and "config" in document:
        return "application/vnd.oci.image.manifest.v1+json"
    return ""


def tagged_manifests(root: Path) -> Iterator[TaggedManifest]:
    """Every tag of every repository under ``root`` (``storage_root``) with its manifest's media
    type, read from the storage itself: ``repositories/<name>/_manifests/tags/<tag>/current/
    link`` and the blob it names. Read while the replicas are read-only, it is exactly what
    garbage-collect will see, with nothing an event-fed inventory may not have caught up with."""
    base = root / "repositories"
    for folder, subfolders, _ in os.walk(base):
        here = Path(folder)
        if "_manifests" in subfolders:
            repository = here.relative_to(base).as_posix()
            tags = here / "_manifests" / "tags"
            for tag in sorted(os.listdir(tags)) if tags.is_dir() else ():
                digest = _read_link(tags / tag / "current" / "link")
                yield TaggedManifest(repository, tag, digest, _media_type(root, digest))
        subfolders[:] = sorted(s for s in subfolders if not s.startswith("_"))


def _redis_section(config_path: str) -> dict[str, Any] | None:
    """The configuration's ``redis`` section when its blob-descriptor cache is Redis's."""
    config = _config(config_path)
    storage = config.get("storage")
    cache = storage.get("cache") if isinstance(storage, dict) else None
    if not isinstance(cache, dict) or str(cache.get("blobdescriptor") or "").lower() != "redis":
        return None
    section = config.get("redis")
    if not isinstance(section, dict) or not section.get("addr"):
        raise StorageConfigError(
            f"The registry configuration {config_path} caches blob descriptors in Redis but "
            "has no redis.addr"
        )
    return section


def blob_cache_forget(config_path: str, digests: Iterable[str]) -> int:
    """Drop the registry's blob-descriptor cache entries (Redis) of the blobs a collection
    deleted, so that a later push of the same layer uploads it again (distribution#2945,
    distribution#4269; Harbor's GC job does the same, goharbor/harbor#5592); how many keys and
    set members were dropped.

    Distribution 2.8 (``registry/storage/cache/redis``) keeps, per blob, a hash
    ``blobs::<digest>`` and, per repository that has it, a hash
    ``repository::<name>::blobs::<digest>`` and a member ``<digest>`` of the set
    ``repository::<name>::blobs``. A stale entry answers "Layer already exists" to a push of a
    deleted layer: the manifest is accepted and the image no longer pulls. All three go. The
    ``inmemory`` cache (or none) lives in each replica's memory and dies with its restart when
    the window ends: nothing to do here, 0. Call it while the replicas are still read-only.
    """
    wanted = {digest for digest in digests if digest}
    section = _redis_section(config_path)
    if section is None or not wanted:
        return 0
    host, _, port = str(section["addr"]).rpartition(":")
    client = redis.Redis(
        host=host.strip("[]") or "127.0.0.1",  # "[::1]:6379" as registry_config writes it
        port=int(port or 6379),
        db=int(section.get("db") or 0),
        password=str(section["password"]) if section.get("password") else None,
        socket_timeout=10,
    )
    try:
        dropped = _forget(client, wanted)
    except redis.RedisError as exc:
        # redis-py's messages name the address, never the password.
        raise StorageConfigError(
            f"Cannot drop the blob-descriptor cache entries of the deleted blobs at "
            f"{section['addr']} (db {section.get('db') or 0}): {type(exc).__name__}: {exc}. "
            "Until they are dropped, a push of a deleted layer is told it exists."
        ) from None
    finally:
        client.close()
    logger.info(
        "registry.gc.cache_forgotten",
        extra={"config": config_path, "blobs": len(wanted), "dropped": dropped},
    )
    return dropped


#: Keys or set members a Redis command carries at most (a collection may delete many blobs).
FORGET_CHUNK = 1000


def _forget(client: redis.Redis, wanted: set[str]) -> int:
    """Each repository's set is asked which of ``wanted`` it holds (``SMISMEMBER``, or its own
    members when it is the smaller) and loses only those: sending every deleted digest to every
    set made the clearing repositories × deleted blobs."""
    ordered = sorted(wanted)
    dropped = sum(
        int(client.delete(*(f"blobs::{digest}" for digest in chunk))) for chunk in _chunks(ordered)
    )
    hashes: list[str] = []
    for raw in client.scan_iter(match="repository::*", count=FORGET_CHUNK):
        key = raw.decode()
        if key.endswith("::blobs"):
            dropped += _set_forget(client, key, wanted, ordered)
        elif key.rpartition("::blobs::")[2] in wanted:
            hashes.append(key)
    return dropped + sum(int(client.delete(*chunk)) for chunk in _chunks(hashes))


def _set_forget(client: redis.Redis, key: str, wanted: set[str], ordered: list[str]) -> int:
    if int(client.scard(key)) <= len(ordered):
        members = client.smembers(key)
        found = sorted({m.decode() if isinstance(m, bytes) else m for m in members} & wanted)
    else:
        found = [
            digest
            for chunk in _chunks(ordered)
            for digest, member in zip(chunk, client.smismember(key, chunk), strict=True)
            if member
        ]
    return sum(int(client.srem(key, *chunk)) for chunk in _chunks(found))


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), FORGET_CHUNK):
        yield items[start : start + FORGET_CHUNK]
