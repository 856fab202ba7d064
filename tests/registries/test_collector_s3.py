"""The garbage collector on S3 storage (moto's S3 server), on the configuration
``registry_config`` renders for it: a deleted image's blobs leave the bucket, the kept image
pulls completely. Nothing measures or purges an S3 bucket from here
(docs/retention.md#upload-purging)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from registries.drivers.collector import garbage_collect
from registries.drivers.storage import storage_bytes, uploads_purge
from tests.registries.test_collector import image, pulled
from tests.support.containers import Skopeo, ok
from tests.support.images import unique_blobs
from tests.support.processes import RegistryProcess, free_port
from tests.support.s3 import bucket_keys, render_s3_config, start_s3_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]

ROOT = "collected"


@pytest.fixture
def s3_endpoint(workdir: Path) -> Iterator[str]:
    server, url = start_s3_server(workdir)
    yield url
    server.stop()


@pytest.fixture
def s3_registry(workdir: Path, s3_endpoint: str) -> Iterator[RegistryProcess]:
    port = free_port()
    config = render_s3_config(
        f"127.0.0.1:{port}",
        endpoint=s3_endpoint,
        root=ROOT,
        redis_url="",  # each process's own cache: the collector runs with the registry stopped
        storage_dir=workdir / "unused-disk-storage",
    )
    registry = RegistryProcess(workdir, port=port, config=config).start()
    yield registry
    registry.stop()


@pytest.fixture
def registry_settings(settings, s3_registry: RegistryProcess):
    settings.REGISTRY_URL = s3_registry.url
    settings.REGISTRY_PUBLIC_HOST = s3_registry.host
    return settings


def blob_keys(blobs: dict[str, int]) -> set[str]:
    return {
        f"{ROOT}/docker/registry/v2/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
        for digest in blobs
    }


def test_a_collection_on_s3_deletes_the_deleted_images_blobs_from_the_bucket(
    ready_cluster, skopeo: Skopeo, workdir: Path, s3_registry: RegistryProcess, s3_endpoint: str
) -> None:
    access = ready_cluster("S3")
    kept, deleted = image(workdir, "kept"), image(workdir, "deleted")
    ok(skopeo.push(kept, f"{access.url}/app:kept", access.secret))
    ok(skopeo.push(deleted, f"{access.url}/app:deleted", access.secret))
    ok(skopeo.delete(f"{access.url}/app:deleted", access.secret))
    assert blob_keys(unique_blobs(deleted, "latest")) <= bucket_keys(s3_endpoint)
    s3_registry.stop()
    config = str(s3_registry.config_path)

    result = garbage_collect(config, delete_untagged=False)

    assert (result.blobs_deleted, result.manifests_deleted, result.returncode) == (3, 0, 0)
    keys = bucket_keys(s3_endpoint)
    assert not blob_keys(unique_blobs(deleted, "latest")) & keys
    assert blob_keys(unique_blobs(kept, "latest")) <= keys
    assert storage_bytes(config) is None
    assert uploads_purge(config, older_than=timedelta(0)) == 0
    s3_registry.start()
    assert pulled(skopeo, access, "app:kept", workdir / "pulled") == unique_blobs(kept, "latest")
