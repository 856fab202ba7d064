"""The registry's Redis blob-descriptor cache after a garbage collection
(``registries.drivers.storage.blob_cache_forget``), on a real registry of the test's own whose
configuration caches in a private ``redis-server``: the collected layer's entries are in the
cache until they are forgotten; once they are, a push of the same image uploads its blobs again
(Distribution no longer answers "Layer already exists" for blobs it deleted, distribution#2945)
and the image pulls whole. With the ``inmemory`` cache there is nothing to forget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from registries.drivers.collector import garbage_collect
from registries.drivers.storage import StorageConfigError, blob_cache_forget
from tests.registries.test_collector import image, pulled
from tests.support.containers import Skopeo, ok
from tests.support.images import unique_blobs
from tests.support.processes import RegistryProcess
from tests.support.stack import RedisServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]


@pytest.fixture
def cache(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def own_registry(workdir: Path, settings, cache: RedisServer) -> Iterator[RegistryProcess]:
    """A registry of this test's own, its blob descriptors cached in ``cache`` (db 2)."""
    settings.REGISTRY_REDIS_URL = cache.url(2)
    registry = RegistryProcess(workdir).start()
    yield registry
    registry.stop()


@pytest.fixture
def registry_settings(settings, own_registry: RegistryProcess):
    settings.REGISTRY_URL = own_registry.url
    settings.REGISTRY_PUBLIC_HOST = own_registry.host
    return settings


def test_forgetting_collected_blobs_makes_a_push_upload_them_again(
    ready_cluster, skopeo: Skopeo, workdir: Path, own_registry: RegistryProcess, cache
) -> None:
    access = ready_cluster("Open Source")
    kept, collected = image(workdir, "kept"), image(workdir, "collected")
    ok(skopeo.push(kept, f"{access.url}/app:kept", access.secret))
    ok(skopeo.push(collected, f"{access.url}/app:gone", access.secret))
    ok(skopeo.delete(f"{access.url}/app:gone", access.secret))
    deleted = unique_blobs(collected, "latest")
    client = redis.Redis(host="127.0.0.1", port=cache.port, db=2)
    repository = f"repository::{access.namespace}/app::blobs"
    own_registry.stop()
    config = str(own_registry.config_path)

    result = garbage_collect(config, delete_untagged=False)

    assert set(result.deleted_blobs) == set(deleted)
    # What makes a re-push skip the upload: the cache still knows the deleted blobs.
    assert all(client.exists(f"blobs::{digest}") for digest in deleted)
    layer = next(d for d in deleted if client.sismember(repository, d))  # the manifest's went
    assert client.exists(f"repository::{access.namespace}/app::blobs::{layer}")

    others = {key for key in client.scan_iter() if not any(d.encode() in key for d in deleted)}
    assert others  # the kept image's entries

    dropped = blob_cache_forget(config, result.deleted_blobs)

    assert dropped >= 3
    for digest in deleted:
        assert not client.exists(f"blobs::{digest}")
        assert not client.sismember(repository, digest)
        assert not client.exists(f"repository::{access.namespace}/app::blobs::{digest}")
    assert others <= set(client.scan_iter())
    kept_blobs = unique_blobs(kept, "latest")
    assert blob_cache_forget(config, result.deleted_blobs) == 0  # nothing left to drop

    own_registry.start()
    ok(skopeo.push(collected, f"{access.url}/app:again", access.secret))
    assert pulled(skopeo, access, "app:again", workdir / "again") == deleted
    assert pulled(skopeo, access, "app:kept", workdir / "kept-pulled") == kept_blobs


def test_an_inmemory_cache_has_nothing_to_forget(workdir: Path) -> None:
    config = workdir / "inmemory.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n"
        f"    rootdirectory: {workdir}\nredis:\n  addr: 127.0.0.1:1\n"
    )
    assert blob_cache_forget(str(config), ["sha256:" + "a" * 64]) == 0


def test_a_cache_that_does_not_answer_fails_saying_where_never_the_password(
    workdir: Path,
) -> None:
    config = workdir / "redis.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  cache:\n    blobdescriptor: redis\n  filesystem:\n"
        f"    rootdirectory: {workdir}\nredis:\n  addr: 127.0.0.1:1\n  password: hunter2\n  db: 3\n"
    )
    with pytest.raises(StorageConfigError) as failed:
        blob_cache_forget(str(config), ["sha256:" + "a" * 64])
    message = str(failed.value)
    assert message.startswith(
        "Cannot drop the blob-descriptor cache entries of the deleted blobs at 127.0.0.1:1 "
        "(db 3): ConnectionError: "
    )
    assert message.endswith("Until they are dropped, a push of a deleted layer is told it exists.")
    assert "hunter2" not in message
    assert blob_cache_forget(str(config), []) == 0  # nothing deleted: nothing to connect for


def test_many_repositories_sets_lose_only_the_deleted_blobs(workdir: Path, cache, monkeypatch):
    """Every repository's set is asked which deleted blobs it holds and loses only those, in
    chunks (``FORGET_CHUNK`` made small here): a set without any is never written to, a large
    set (more members than blobs deleted) and a small one alike keep their other members."""
    from registries.drivers import storage

    monkeypatch.setattr(storage, "FORGET_CHUNK", 3)
    config = workdir / "redis.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  cache:\n    blobdescriptor: redis\n  filesystem:\n"
        f"    rootdirectory: {workdir}\nredis:\n  addr: 127.0.0.1:{cache.port}\n  db: 4\n"
    )
    client = redis.Redis(host="127.0.0.1", port=cache.port, db=4)
    digest = "sha256:{:064x}".format
    deleted = [digest(n) for n in range(7)]
    kept = [digest(100 + n) for n in range(20)]
    for n in range(40):  # repo-0..repo-39; every fourth holds two deleted blobs
        key = f"repository::ns/repo-{n}::blobs"
        client.sadd(key, *(kept if n % 2 else kept[:2]))
        if n % 4 == 0:
            client.sadd(key, deleted[n % 7], deleted[(n + 1) % 7])
            client.hset(f"repository::ns/repo-{n}::blobs::{deleted[n % 7]}", "size", 1)
    client.mset({f"blobs::{d}": 1 for d in deleted + kept})
    client.config_resetstat()

    dropped = blob_cache_forget(str(config), deleted)

    assert dropped == 7 + 10 * 2 + 10
    srem = client.info("commandstats").get("cmdstat_srem", {}).get("calls", 0)
    assert srem == 10  # one a set holding deleted blobs (2 each, within a chunk)
    for n in range(40):
        members = {m.decode() for m in client.smembers(f"repository::ns/repo-{n}::blobs")}
        assert members == set(kept if n % 2 else kept[:2])
    assert not any(client.exists(f"blobs::{d}") for d in deleted)
    assert all(client.exists(f"blobs::{k}") for k in kept)
    assert not list(client.scan_iter(match="repository::*::blobs::*"))
