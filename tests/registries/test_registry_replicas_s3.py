"""One registry served by two replicas (issue 16, item 4), with real processes: two Distribution
registries (Debian's 2.8) from the configuration ``manage.py registry_config --replicas 2``
renders, on one bucket of a local S3 server (moto's), one Redis blob-descriptor cache and one
``http.secret``, each on its own port as two pods behind a load balancer would be.

Behind a load balancer any request may reach either replica: an image pushed through one must
pull through the other, and the requests of one upload (POST, PATCH, PUT) may each land on a
different replica. The last test shows why the shared secret matters: a replica with another one
cannot read the upload state the first signed.

The S3 server, the Redis and the two replicas are shared by the module's tests (each test uses
its own repository), so the module costs a few process starts, not a few per test.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests

from registries.demo_image import write_oci_layout
from registries.tokens import Principal, Scope, token_issue
from tests.support.containers import layout_digest, ok
from tests.support.processes import RegistryProcess, free_port
from tests.support.s3 import render_s3_config, start_s3_server
from tests.support.stack import RedisServer

pytestmark = pytest.mark.integration

ROOT = "replicated-registry"
CACHE_DB = 2
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class SharedStorage:
    """What the replicas share: a bucket on the S3 server and a Redis for the cache."""

    workdir: Path
    endpoint: str
    redis: RedisServer

    def config(self, port: int, **overrides: object) -> str:
        """The configuration ``registry_config --replicas 2`` renders for a replica on
        ``port`` (the only line that differs between replicas: ``http.addr``)."""
        return render_s3_config(
            f"127.0.0.1:{port}",
            endpoint=self.endpoint,
            root=ROOT,
            redis_url=self.redis.url(CACHE_DB),
            storage_dir=self.workdir / "unused-disk-storage",
            replicas=2,
            **overrides,
        )

    def replica(self, **overrides: object) -> RegistryProcess:
        """A replica on a free port, to start (and stop)."""
        port = free_port()
        return RegistryProcess(self.workdir, port=port, config=self.config(port, **overrides))


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedStorage]:
    workdir = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack:
        server, endpoint = start_s3_server(workdir)
        stack.callback(server.stop)
        cache = RedisServer(workdir / "redis").start()
        stack.callback(cache.stop)
        yield SharedStorage(workdir, endpoint, cache)


@pytest.fixture(scope="module")
def replicas(storage: SharedStorage) -> Iterator[tuple[RegistryProcess, RegistryProcess]]:
    """Replicas A and B of one registry."""
    with ExitStack() as stack:
        pair = []
        for _ in range(2):
            replica = storage.replica().start()
            stack.callback(replica.stop)
            pair.append(replica)
        yield pair[0], pair[1]


def authorization(repository: str, *actions: str) -> dict[str, str]:
    """A token the control plane would issue for ``actions`` on ``repository``, signed with the
    tests' key: what a client presents to any replica."""
    owner = Principal(subject="replicas-test", namespace=repository)
    token = token_issue(owner, [Scope("repository", repository, actions)]).token
    return {"Authorization": f"Bearer {token}"}


def on(replica: RegistryProcess, location: str) -> str:
    """An upload's ``Location`` (as another replica answered it), sent to ``replica``: a load
    balancer's choice."""
    parts = urlsplit(location)
    return urlunsplit(("http", replica.host, parts.path, parts.query, ""))


@pytest.fixture
def registry_settings(settings, replicas: tuple[RegistryProcess, RegistryProcess]):
    """The control plane provisions on replica A, and publishes its host."""
    replica_a, _ = replicas
    settings.REGISTRY_URL = replica_a.url
    settings.REGISTRY_PUBLIC_HOST = replica_a.host
    return settings


def test_the_replicas_configurations_differ_in_their_address_only(
    storage: SharedStorage,
) -> None:
    first, second = storage.config(5000), storage.config(5001)
    changed = [
        (one, other)
        for one, other in zip(first.splitlines(), second.splitlines(), strict=True)
        if one != other
    ]
    assert changed == [('  addr: "127.0.0.1:5000"', '  addr: "127.0.0.1:5001"')]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_server", "container_tools")
def test_an_image_pushed_through_one_replica_is_pulled_through_the_other(
    ready_cluster,
    replicas: tuple[RegistryProcess, RegistryProcess],
    storage: SharedStorage,
    skopeo,
    workdir: Path,
) -> None:
    replica_a, replica_b = replicas
    cluster = ready_cluster("Replicas")
    repository = f"{cluster.namespace}/base"
    digest = write_oci_layout(workdir / "image", "pushed through replica A")

    ok(skopeo.push(workdir / "image", f"{replica_a.host}/{repository}:latest", cluster.secret))
    ok(skopeo.pull(f"{replica_b.host}/{repository}:latest", cluster.secret, workdir / "pulled"))

    assert layout_digest(workdir / "pulled") == digest
    manifest = requests.get(
        f"{replica_b.url}/v2/{repository}/manifests/{digest}",
        headers={**authorization(repository, "pull"), "Accept": OCI_MANIFEST},
        timeout=10,
    )
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Docker-Content-Digest"] == digest
    assert f"sha256:{hashlib.sha256(manifest.content).hexdigest()}" == digest
    # Both replicas describe blobs in the one Redis they share.
    cache = redis.Redis.from_url(storage.redis.url(CACHE_DB))
    config_digest = manifest.json()["config"]["digest"]
    assert cache.exists(f"blobs::{config_digest}")


def test_an_upload_started_on_one_replica_is_finished_on_the_other(
    replicas: tuple[RegistryProcess, RegistryProcess],
) -> None:
    replica_a, replica_b = replicas
    repository = "replicas/upload"
    headers = authorization(repository, "pull", "push")
    first, last = os.urandom(40_000), os.urandom(25_000)
    digest = f"sha256:{hashlib.sha256(first + last).hexdigest()}"

    started = requests.post(
        f"{replica_a.url}/v2/{repository}/blobs/uploads/", headers=headers, timeout=10
    )
    assert started.status_code == 202, started.text
    chunk = requests.patch(
        on(replica_b, started.headers["Location"]),
        data=first,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert chunk.status_code == 202, chunk.text
    assert chunk.headers["Range"] == f"0-{len(first) - 1}"
    finished = requests.put(
        on(replica_a, chunk.headers["Location"]),
        params={"digest": digest},
        data=last,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert finished.status_code == 201, finished.text
    assert finished.headers["Docker-Content-Digest"] == digest

    for replica in replicas:
        found = requests.head(
            f"{replica.url}/v2/{repository}/blobs/{digest}", headers=headers, timeout=10
        )
        assert found.status_code == 200, replica.host
        assert found.headers["Docker-Content-Digest"] == digest
        assert int(found.headers["Content-Length"]) == len(first) + len(last)


def test_a_replica_with_another_http_secret_cannot_continue_an_upload(
    storage: SharedStorage, replicas: tuple[RegistryProcess, RegistryProcess]
) -> None:
    """The same bucket and cache, but rendered from another DJANGO_SECRET_KEY: the upload state
    replica A signed (the ``_state`` of its ``Location``) is refused."""
    replica_a, _ = replicas
    repository = "replicas/unshared"
    headers = authorization(repository, "pull", "push")
    stranger = storage.replica(SECRET_KEY="another-deployment's-secret-key").start()
    try:
        started = requests.post(
            f"{replica_a.url}/v2/{repository}/blobs/uploads/", headers=headers, timeout=10
        )
        assert started.status_code == 202, started.text
        chunk = requests.patch(
            on(stranger, started.headers["Location"]),
            data=b"a chunk",
            headers={**headers, "Content-Type": "application/octet-stream"},
            timeout=10,
        )
    finally:
        stranger.stop()
    assert chunk.status_code == 404, chunk.text
    assert [error["code"] for error in chunk.json()["errors"]] == ["BLOB_UPLOAD_INVALID"]
