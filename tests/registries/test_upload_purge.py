"""Upload purging in the maintenance window (docs/retention.md#upload-purging): an upload
started and abandoned (``POST .../blobs/uploads/``, a ``PATCH`` of one chunk, never the closing
``PUT``) whose ``startedat`` is older than the age is deleted from filesystem storage, with
Distribution's own rule; a younger one stays and can still be finished. Against a real registry
of the test's own (token authentication, tokens signed by the control plane), and on storage
folders laid out by hand for the rules Distribution's purger applies."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from registries.drivers.storage import (
    StorageConfigError,
    storage_bytes,
    storage_root,
    uploads_purge,
)
from registries.registry_config_rules import upload_purging_age
from registries.tokens import Principal, Scope, token_issue
from tests.support.processes import RegistryProcess, wait_until

NAMESPACE = "acme/0123456789ab"
REPOSITORY = f"{NAMESPACE}/app"
OLD = "2026-11-01T08:00:00Z"


@pytest.fixture
def own_registry(workdir: Path) -> Iterator[RegistryProcess]:
    registry = RegistryProcess(workdir).start()
    yield registry
    registry.stop()


def headers() -> dict[str, str]:
    token = token_issue(
        Principal.control_plane(NAMESPACE), [Scope("repository", REPOSITORY, ("pull", "push"))]
    ).token
    return {"Authorization": f"Bearer {token}"}


def start_upload(registry: RegistryProcess, chunk: bytes) -> tuple[str, str]:
    """Start an upload and send one chunk of it; its id and the Location to go on at."""
    started = requests.post(
        f"{registry.url}/v2/{REPOSITORY}/blobs/uploads/", headers=headers(), timeout=10
    )
    assert started.status_code == 202, started.text
    patched = requests.patch(
        started.headers["Location"],
        data=chunk,
        headers={**headers(), "Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert patched.status_code == 202, patched.text
    assert patched.headers["Range"] == f"0-{len(chunk) - 1}"
    return patched.headers["Docker-Upload-UUID"], patched.headers["Location"]


def upload_folder(registry: RegistryProcess, upload_id: str) -> Path:
    root = storage_root(str(registry.config_path))
    assert root is not None
    return root / "repositories" / REPOSITORY / "_uploads" / upload_id


def started_at(folder: Path) -> datetime:
    return datetime.fromisoformat((folder / "startedat").read_text())


@pytest.mark.integration
@pytest.mark.django_db
def test_an_abandoned_upload_older_than_the_age_is_purged_and_a_younger_one_stays(
    own_registry: RegistryProcess,
) -> None:
    abandoned_id, abandoned = start_upload(own_registry, b"abandoned chunk")
    # startedat has whole seconds: the second upload starts in a later one.
    older = started_at(upload_folder(own_registry, abandoned_id))
    wait_until(lambda: datetime.now(UTC).replace(microsecond=0) > older, interval=0.05)
    chunk = b"a chunk still being pushed"
    young_id, young = start_upload(own_registry, chunk)
    young_started = started_at(upload_folder(own_registry, young_id))
    assert older < young_started
    age = upload_purging_age()

    # The moment the younger upload reaches the age: it is not older yet, the first one is.
    purged = uploads_purge(str(own_registry.config_path), older_than=age, now=young_started + age)

    assert purged == 1
    assert not upload_folder(own_registry, abandoned_id).exists()
    assert upload_folder(own_registry, young_id).exists()
    gone = requests.get(abandoned, headers=headers(), timeout=10)
    assert gone.status_code == 404
    assert [error["code"] for error in gone.json()["errors"]] == ["BLOB_UPLOAD_UNKNOWN"]
    # The younger upload goes on: its client closes it and the blob is there.
    digest = f"sha256:{hashlib.sha256(chunk).hexdigest()}"
    closed = requests.put(young, params={"digest": digest}, headers=headers(), timeout=10)
    assert closed.status_code == 201, closed.text
    blob = requests.get(
        f"{own_registry.url}/v2/{REPOSITORY}/blobs/{digest}", headers=headers(), timeout=10
    )
    assert (blob.status_code, blob.content) == (200, chunk)


def filesystem_config(tmp_path: Path, root: Path) -> str:
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nhttp:\n  secret: 's3cr3t'\nstorage:\n"
        f"  filesystem:\n    rootdirectory: {str(root)!r}\n  delete:\n    enabled: true\n"
    )
    return str(config)


def upload(root: Path, repository: str, name: str, started: str | None) -> Path:
    folder = root / "docker/registry/v2/repositories" / repository / "_uploads" / name
    folder.mkdir(parents=True)
    (folder / "data").write_bytes(b"x" * 10)
    if started is not None:
        (folder / "startedat").write_text(started)
    return folder


def test_the_purge_follows_distributions_rule(tmp_path: Path) -> None:
    root = tmp_path / "data"
    config = filesystem_config(tmp_path, root)
    old = upload(root, "acme/a/app", str(uuid.uuid4()), OLD)
    nested = upload(root, "acme/a/deep/er/app", str(uuid.uuid4()), "2026-11-01T09:00:00.5+01:00")
    young = upload(root, "acme/a/app", str(uuid.uuid4()), "2026-11-30T08:00:00Z")
    # What Distribution's purger leaves alone too: no startedat, one it cannot read, a folder
    # not named by an upload id.
    kept = [
        upload(root, "acme/a/app", str(uuid.uuid4()), None),
        upload(root, "acme/a/app", str(uuid.uuid4()), "yesterday"),
        upload(root, "acme/a/app", "not-an-upload", OLD),
    ]
    now = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

    assert uploads_purge(config, older_than=timedelta(days=7), now=now) == 2

    assert not old.exists()
    assert not nested.exists()
    assert all(folder.exists() for folder in [young, *kept])
    assert uploads_purge(config, older_than=timedelta(days=7), now=now) == 0


def test_storage_is_measured_in_file_bytes_on_disk_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    config = filesystem_config(tmp_path, root)
    assert storage_bytes(config) == 0  # nothing pushed yet
    upload(root, "acme/a/app", str(uuid.uuid4()), OLD)  # 10 bytes of data, 20 of startedat
    blob = root / "docker/registry/v2/blobs/sha256/ab/abcd/data"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"y" * 1000)

    assert storage_bytes(config) == 1030

    s3 = tmp_path / "s3.yml"
    s3.write_text("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    secretkey: hunter2\n")
    # The registry's own purger cleans S3; nothing here can measure the bucket.
    assert (storage_bytes(str(s3)), uploads_purge(str(s3), older_than=timedelta(0))) == (None, 0)


def test_an_unreadable_configuration_is_refused_without_its_content(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("storage:\n  s3:\n    secretkey: hunter2\n  - [unbalanced\n")
    no_storage = tmp_path / "no-storage.yml"
    no_storage.write_text("version: 0.1\n")

    with pytest.raises(StorageConfigError) as refused:
        storage_bytes(str(broken))

    assert str(refused.value) == f"Cannot read the registry configuration {broken}: ParserError"
    with pytest.raises(StorageConfigError) as refused:
        uploads_purge(str(tmp_path / "missing.yml"), older_than=timedelta(0))
    assert str(refused.value).endswith("missing.yml: FileNotFoundError")
    with pytest.raises(StorageConfigError) as refused:
        storage_bytes(str(no_storage))
    assert str(refused.value) == f"The registry configuration {no_storage} has no storage"
