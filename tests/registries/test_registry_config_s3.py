"""The production registry configuration with real processes (issue 14, item 8): a
Distribution registry (Debian's 2.8) configured by ``manage.py registry_config`` for S3 storage
on a local S3 server (moto's, from PyPI), with the blob-descriptor cache in a private Redis, its
Prometheus metrics on loopback and notifications to a sink with the token, takes a push and a
pull with an agent token; the token endpoint runs in the live server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from registries.demo_image import write_oci_layout
from tests.support.containers import layout_digest, ok
from tests.support.processes import RegistryProcess, two_free_ports, wait_until
from tests.support.s3 import SECRET_KEY, bucket_keys, render_s3_config, start_s3_server
from tests.support.stack import RedisServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]

ROOT = "registry-root"
NOTIFY_TOKEN = "notify-token-never-logged"
REDIS_PASSWORD = "redis-password-never-logged"


@pytest.fixture
def s3_endpoint(workdir: Path) -> Iterator[str]:
    """moto's S3 server on a free 127.0.0.1 port, with the bucket created; its URL."""
    server, url = start_s3_server(workdir)
    yield url
    server.stop()


@pytest.fixture
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis").start()
    redis.Redis.from_url(server.url()).config_set("requirepass", REDIS_PASSWORD)
    yield server
    server.stop()


class Sink(BaseHTTPRequestHandler):
    """Records each notification: its Authorization header and its events."""

    received: list[tuple[str | None, list[dict[str, Any]]]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers["Authorization"], json.loads(body)["events"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def notifications() -> Iterator[tuple[str, list[tuple[str | None, list[dict[str, Any]]]]]]:
    """An HTTP sink in a thread: its URL and what it received."""
    received: list[tuple[str | None, list[dict[str, Any]]]] = []
    handler = type("RecordingSink", (Sink,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3_registry(
    workdir: Path,
    s3_endpoint: str,
    redis_server: RedisServer,
    notifications,
) -> Iterator[RegistryProcess]:
    """docker-registry on the configuration ``registry_config`` renders from the settings."""
    port = two_free_ports()  # the metrics listen on port + 1
    config = render_s3_config(
        f"127.0.0.1:{port}",
        endpoint=s3_endpoint,
        root=ROOT,
        redis_url=redis_server.url(3).replace("//", f"//:{REDIS_PASSWORD}@"),
        storage_dir=workdir / "unused-disk-storage",
        REGISTRY_NOTIFICATIONS_URL=notifications[0],
        REGISTRY_NOTIFICATIONS_TOKEN=NOTIFY_TOKEN,
        REGISTRY_PROMETHEUS_ENABLED=True,
    )
    registry = RegistryProcess(workdir, port=port, config=config).start()
    yield registry
    registry.stop()


@pytest.fixture
def registry_settings(settings, s3_registry: RegistryProcess):
    """The control plane provisions on the S3-backed registry (instead of the session's)."""
    settings.REGISTRY_URL = s3_registry.url
    settings.REGISTRY_PUBLIC_HOST = s3_registry.host
    return settings


def test_a_push_and_pull_through_s3_storage_with_the_redis_cache(
    ready_cluster, s3_registry: RegistryProcess, s3_endpoint: str, redis_server, skopeo,
    notifications, workdir: Path,
) -> None:  # fmt: skip
    a = ready_cluster("S3")
    digest = write_oci_layout(workdir / "image", "stored in S3")
    reference = f"{a.url}/base:latest"

    ok(skopeo.push(workdir / "image", reference, a.secret))
    ok(skopeo.pull(reference, a.secret, workdir / "pulled"))

    assert layout_digest(workdir / "pulled") == digest
    manifest = json.loads((workdir / "image/blobs" / digest.replace(":", "/")).read_bytes())
    blobs = [digest, manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])]
    # Every blob, the manifest's revision and the tag are objects in the bucket, under the root.
    keys = bucket_keys(s3_endpoint)
    v2 = f"{ROOT}/docker/registry/v2"
    for blob in blobs:
        algorithm, hex_digest = blob.split(":")
        assert f"{v2}/blobs/{algorithm}/{hex_digest[:2]}/{hex_digest}/data" in keys
    repository = f"{v2}/repositories/{a.namespace}/base"
    assert f"{repository}/_manifests/tags/latest/current/link" in keys
    assert f"{repository}/_manifests/revisions/sha256/{digest.split(':')[1]}/link" in keys
    assert not (workdir / "unused-disk-storage").exists()
    # The registry described the blobs in Redis, where its replicas share them.
    cache = redis.Redis.from_url(redis_server.url(3), password=REDIS_PASSWORD)
    assert {f"blobs::{blob}".encode() for blob in blobs[1:]} <= set(cache.keys("blobs::*"))
    # Its own metrics on loopback, the registry's port + 1.
    metrics = requests.get(f"http://127.0.0.1:{s3_registry.port + 1}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "registry_storage_action_seconds" in metrics.text
    # Notifications arrive, each with the token.
    _, received = notifications

    def tag_pushed() -> bool:
        return any(
            event["action"] == "push" and event["target"].get("tag") == "latest"
            for _, events in list(received)
            for event in events
        )

    wait_until(tag_pushed, timeout=15, what="the tag's push notification")
    assert {authorization for authorization, _ in received} == {f"Bearer {NOTIFY_TOKEN}"}
    # (Debian's Distribution 2.8.2 sends pulls too, despite the endpoint's `ignore.actions`.)
    # No secret in the registry's log or the S3 server's, but for one line: Distribution 2.8
    # prints each endpoint's headers when it starts (level info), so the token is there.
    logs = s3_registry.log_path.read_text() + (workdir / "moto.log").read_text()
    assert SECRET_KEY not in logs
    assert REDIS_PASSWORD not in logs
    leaks = [line for line in logs.splitlines() if NOTIFY_TOKEN in line]
    assert len(leaks) == 1, leaks
    assert "configuring endpoint controlplane" in leaks[0]
