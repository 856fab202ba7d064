"""The maintenance window with real processes: a registry replica under ``scripts/run-registry``,
the token endpoint and the replicas' endpoint in the live server, skopeo as the client.

A push during the window gets the documented answer from the token endpoint (skopeo prints it)
while pulls keep working; a window whose replica does not switch fails naming it, and ends with
every replica read-write and pushes granted again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.core.management import call_command

from controlplane import humanize
from registries.demo_image import write_oci_layout
from registries.maintenance import CollectionState, GarbageCollection, RegistryReplica
from registries.models import RegistryBackend
from registries.services import collection_request, collection_run, refuse_pushes
from tests.support.containers import layout_digest, ok
from tests.support.processes import wait_until
from tests.support.replicas import RunnerReplica

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]

TOKEN = "window-live-notifications-token"
MAINTENANCE = (
    "Registry maintenance: garbage collection on this registry's backend; pushes are refused "
    "until it ends. Retry after {} seconds."
)


def refusal_in(stderr: str) -> int:
    """The seconds of the maintenance refusal skopeo printed (fails if it did not print it)."""
    prefix, _, rest = stderr.partition("denied: Registry maintenance: ")
    assert rest, stderr
    seconds = int(rest.split("Retry after ")[1].split(" ")[0])
    assert MAINTENANCE.format(seconds) in stderr
    return seconds


def test_a_push_during_the_window_gets_the_maintenance_answer_and_a_pull_works(
    ready_cluster, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    first, second = workdir / "first", workdir / "second"
    write_oci_layout(first, "before the window")
    write_oci_layout(second, "during the window")
    ok(skopeo.push(first, f"{a.url}/base:latest", a.secret))
    backend = RegistryBackend.objects.get(name="default")

    refuse_pushes(backend.pk, 90)
    refused = skopeo.push(second, f"{a.url}/app:latest", a.secret)
    pulled = skopeo.pull(f"{a.url}/base:latest", a.secret, workdir / "pulled")

    assert refused.returncode != 0
    assert 1 <= refusal_in(refused.stderr) <= 90
    ok(pulled)
    assert layout_digest(workdir / "pulled") == layout_digest(first)
    assert "manifest unknown" in skopeo.inspect(f"{a.url}/app:latest", a.secret).stderr

    refuse_pushes(backend.pk, None)
    ok(skopeo.push(second, f"{a.url}/app:latest", a.secret))


@pytest.fixture
def replica(settings, live_server, registry_settings, workdir: Path) -> Iterator[RunnerReplica]:
    settings.REGISTRY_NOTIFICATIONS_URL = f"{live_server.url}/registry/notifications"
    settings.REGISTRY_NOTIFICATIONS_TOKEN = TOKEN
    settings.REGISTRY_GC_REPLICA_POLL_SECONDS = 0.3
    settings.REGISTRY_GC_REPLICA_STALE_SECONDS = 10.0
    settings.REGISTRY_GC_DRAIN_SECONDS = 1.0
    settings.HOT_CACHE_SECONDS = 0.5
    settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS = 8.0
    settings.REGISTRY_DRAIN_TIMEOUT = "2s"  # below the switch timeout (registry_config checks)
    settings.REGISTRY_GC_CONFIG = str(workdir / "replica-r1.yml")
    started = RunnerReplica(workdir, "r1").start()
    registry_settings.REGISTRY_URL = started.url
    registry_settings.REGISTRY_PUBLIC_HOST = started.host
    wait_until(lambda: RegistryReplica.objects.filter(name="r1").exists(), what="r1's report")
    yield started
    started.stop()


class StuckReplica(threading.Thread):
    """A replica's runner that reports ``mode`` whatever it is told: one that cannot restart
    (read-write), or one that restarts read-write mid-window when ``restart()`` is called."""

    def __init__(self, url: str, name: str = "stuck", mode: str = "readwrite") -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.mode = url, name, mode
        self.done = threading.Event()

    def report(self) -> None:
        params = {"service": "hosted-registry", "replica": self.name, "mode": self.mode}
        requests.get(
            f"{self.url}/registry/maintenance", params=params,
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5,
        ).raise_for_status()  # fmt: skip

    def restart(self) -> None:
        """Restarted read-write (its runner did not ask first): reported now."""
        self.mode = "readwrite"
        self.report()

    def run(self) -> None:
        while not self.done.is_set():
            self.report()
            self.done.wait(0.3)


def test_a_replica_that_does_not_switch_fails_the_window_which_still_ends_read_write(
    replica: RunnerReplica, ready_cluster, skopeo, live_server, workdir: Path
) -> None:
    a = ready_cluster("A")
    write_oci_layout(workdir / "image", "an image")
    ok(skopeo.push(workdir / "image", f"{a.url}/base:latest", a.secret))
    stuck = StuckReplica(live_server.url)
    stuck.start()
    wait_until(lambda: RegistryReplica.objects.filter(name="stuck").exists(), what="stuck")
    backend = RegistryBackend.objects.get(name="default")
    collection = collection_request(backend, trigger="operator", actor="test", enqueue=False)
    states: list[str] = []
    during: dict[str, object] = {}

    def watch(shown: GarbageCollection) -> None:
        if not states or states[-1] != shown.state:
            states.append(shown.state)
        if shown.state == CollectionState.READ_ONLY and "push" not in during:
            replica.wait_mode("readonly")
            during["push"] = skopeo.push(workdir / "image", f"{a.url}/during:latest", a.secret)
            during["pull"] = skopeo.pull(f"{a.url}/base:latest", a.secret, workdir / "pulled")

    try:
        ran = collection_run(str(collection.pk), on_progress=watch)
    finally:
        stuck.done.set()
        stuck.join()

    assert ran is not None
    assert states == ["draining", "read_only", "restoring", "failed"]
    assert ran.error.startswith(
        "Replica(s) stuck of backend default did not report readonly within 8 s: "
    )
    refusal_in(during["push"].stderr)  # type: ignore[attr-defined]
    ok(during["pull"])  # type: ignore[arg-type]
    # The window ended: the replica is read-write again and pushes are granted.
    replica.wait_mode("readwrite")
    assert RegistryReplica.objects.get(name="r1").mode == "readwrite"
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None
    ok(skopeo.push(workdir / "image", f"{a.url}/after:latest", a.secret))


def test_a_replica_read_write_when_garbage_collect_ends_fails_the_window_naming_it(
    replica: RunnerReplica, ready_cluster, skopeo, live_server, workdir: Path
) -> None:
    """r2 was read-only when garbage-collect started and restarted read-write while it ran: the
    check right after the collector names it, the kept tags are verified all the same."""
    a = ready_cluster("A")
    write_oci_layout(workdir / "image", "an image")
    ok(skopeo.push(workdir / "image", f"{a.url}/base:latest", a.secret))
    r2 = StuckReplica(live_server.url, "r2", "readonly")
    r2.start()
    wait_until(lambda: RegistryReplica.objects.filter(name="r2").exists(), what="r2")
    backend = RegistryBackend.objects.get(name="default")
    collection = collection_request(backend, trigger="operator", actor="test", enqueue=False)
    states: list[str] = []

    def watch(shown: GarbageCollection) -> None:
        if not states or states[-1] != shown.state:
            states.append(shown.state)
        message = shown.progress.get("message", "")
        if message.startswith("deciding on --delete-untagged"):
            time.sleep(1.1)  # the collector's first line is then saved (and seen here)
        elif message.startswith("garbage-collect: ") and r2.mode == "readonly":
            r2.restart()

    try:
        ran = collection_run(str(collection.pk), on_progress=watch)
    finally:
        r2.done.set()
        r2.join()

    assert ran is not None
    assert ran.error.startswith(
        "Replica(s) r2 of backend default were not known to be read-only right after "
        "garbage-collect"
    ), ran.error
    assert states == ["draining", "read_only", "collecting", "restoring", "verifying", "failed"]
    assert (ran.tags_verified, ran.missing) == (1, 0)
    assert RegistryBackend.objects.get(pk=backend.pk).pushes_refused_until is None


def test_a_whole_collection_frees_the_deleted_image_verifies_the_kept_one_and_reopens(
    replica: RunnerReplica, ready_cluster, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    kept, old = workdir / "kept", workdir / "old"
    write_oci_layout(kept, "the image a pipeline uses")
    write_oci_layout(old, "an earlier build, deleted")
    ok(skopeo.push(kept, f"{a.url}/base:latest", a.secret))
    ok(skopeo.push(old, f"{a.url}/base:build-1", a.secret))
    ok(skopeo.delete(f"{a.url}/base:build-1", a.secret))
    out = StringIO()

    call_command("registry_gc", "default", "--wait", stdout=out)

    lines = out.getvalue().splitlines()
    states = [line.split(":")[0] for line in lines[:-1]]
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == [
        "draining", "read_only", "collecting", "restoring", "verifying", "succeeded",
    ]  # fmt: skip
    collection = GarbageCollection.objects.get()
    assert (
        f"collecting: garbage-collect: {collection.blobs_deleted} blobs and "
        f"{collection.manifests_deleted} manifests deleted"
    ) in "\n".join(lines)
    assert collection.state == CollectionState.SUCCEEDED, collection.error
    # Exactly the deleted build's blobs (its manifest, config and layer; none shared with the
    # kept image): the blob files are what garbage-collect deletes, and all it deletes.
    only_old = {blob.name for blob in (old / "blobs/sha256").iterdir()} - {
        blob.name for blob in (kept / "blobs/sha256").iterdir()
    }
    assert len(only_old) == 3
    assert collection.freed_bytes == sum(
        (old / "blobs/sha256" / name).stat().st_size for name in only_old
    )
    assert (collection.tags_verified, collection.missing) == (1, 0)
    assert lines[-1] == (
        f"succeeded: freed {humanize.size(collection.freed_bytes)}; "
        f"{collection.blobs_deleted} blobs and {collection.manifests_deleted} manifests deleted, "
        f"0 uploads purged; 1 tags verified, 0 missing"
    )
    assert collection.blobs_deleted == 3
    assert RegistryBackend.objects.get(name="default").pushes_refused_until is None
    replica.wait_mode("readwrite")
    ok(skopeo.pull(f"{a.url}/base:latest", a.secret, workdir / "pulled"))
    assert layout_digest(workdir / "pulled") == layout_digest(kept)
    ok(skopeo.push(old, f"{a.url}/base:build-2", a.secret))
