"""The verification after a garbage collection on the production storage ``registry_config``
renders: S3 (moto's server) with the blob-descriptor cache in Redis, which outlives a registry's
restart, so a blob whose object is gone stays described to ``HEAD`` for as long as the cache
keeps it. Once with the registry streaming blobs itself, once redirecting clients to presigned
URLs (``REGISTRY_S3_REDIRECT``): either way, the verification reads the first byte where a pull
would, and reports the layer whose object the test deleted from the bucket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from registries import conditions
from registries.demo_image import write_oci_layout
from registries.maintenance import (
    CollectionState,
    CollectionTrigger,
    GarbageCollection,
    VerificationFailure,
)
from registries.services.verification import VerificationSummary, collection_verify
from tests.registries.test_verification import pull_token
from tests.support.containers import ok
from tests.support.images import tagged
from tests.support.processes import RegistryProcess, free_port
from tests.support.s3 import BUCKET, render_s3_config, s3_client, start_s3_server
from tests.support.stack import RedisServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server"),
]

ROOT = "verified-registry"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, RedisServer]]:
    """The S3 server and the Redis of the module's registries."""
    workdir = tmp_path_factory.mktemp("verification-s3")
    with ExitStack() as stack:
        server, endpoint = start_s3_server(workdir)
        stack.callback(server.stop)
        cache = RedisServer(workdir / "redis").start()
        stack.callback(cache.stop)
        yield workdir, endpoint, cache


@pytest.fixture(scope="module", params=[False, True], ids=["streamed", "redirected"])
def registry_process(
    request: pytest.FixtureRequest, s3: tuple[Path, str, RedisServer]
) -> Iterator[RegistryProcess]:
    """A registry on S3 with its cache in Redis, redirecting blob reads or not."""
    workdir, endpoint, cache = s3
    port = free_port()
    config = render_s3_config(
        f"127.0.0.1:{port}",
        endpoint=endpoint,
        root=f"{ROOT}-{port}",
        redis_url=cache.url(1 + request.param),
        storage_dir=workdir / "unused-disk-storage",
        REGISTRY_S3_REDIRECT=request.param,
        REGISTRY_NOTIFICATIONS_URL="",
        REGISTRY_NOTIFICATIONS_TOKEN="",
    )
    assert ("disable: false" in config) is request.param
    assert "blobdescriptor: redis" in config
    registry = RegistryProcess(workdir, port=port, config=config).start()
    yield registry
    registry.stop()


def test_a_layer_deleted_from_the_bucket_is_reported_though_the_cache_describes_it(
    ready_cluster, skopeo, workdir: Path, registry_process: RegistryProcess, s3
) -> None:
    _, endpoint, _ = s3
    layout = workdir / "image"
    write_oci_layout(layout, f"on S3, {registry_process.port}")
    cluster = ready_cluster("S3")
    ok(skopeo.push(layout, f"{cluster.url}/app:1", cluster.secret))
    manifest = tagged(layout)
    layer = json.loads((layout / "blobs" / manifest.replace(":", "/")).read_bytes())["layers"]
    digest = layer[0]["digest"]
    first = GarbageCollection.objects.create(
        backend_id=cluster.registry.backend_id,
        trigger=CollectionTrigger.OPERATOR,
        state=CollectionState.VERIFYING,
    )
    assert collection_verify(first) == VerificationSummary(1, 1, 2, 0)
    hex_ = digest.removeprefix("sha256:")
    key = f"{ROOT}-{registry_process.port}/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"
    s3_client(endpoint).delete_object(Bucket=BUCKET, Key=key)
    head = requests.head(
        f"{registry_process.url}/v2/{cluster.namespace}/app/blobs/{digest}",
        headers={"Authorization": f"Bearer {pull_token(cluster.registry, 'app')}"},
        timeout=5,
    )
    # The Redis cache still describes it: found, or (redirected) found at a presigned URL.
    redirected = "disable: false" in (registry_process.config or "")
    assert head.status_code == (307 if redirected else 200)
    GarbageCollection.objects.filter(pk=first.pk).update(state=CollectionState.SUCCEEDED)
    second = GarbageCollection.objects.create(
        backend_id=cluster.registry.backend_id,
        trigger=CollectionTrigger.OPERATOR,
        state=CollectionState.VERIFYING,
    )

    summary = collection_verify(second)

    assert summary == VerificationSummary(1, 1, 2, 1)
    failure = VerificationFailure.objects.get(collection=second)
    assert (failure.repository, failure.tag, failure.kind, failure.digest) == (
        f"{cluster.namespace}/app",
        "1",
        "blob",
        digest,
    )
    assert failure.parent_digest == manifest
    assert failure.detail == (
        "GET (redirected to its storage): 404"
        if redirected
        else "GET: the registry described it but served none of its data"
    )
    cluster.registry.refresh_from_db()
    condition = conditions.condition_get(cluster.registry, conditions.VERIFIED)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == (conditions.FALSE, "ContentMissing")
