"""``scripts/run-registry``: the runner that switches a real Distribution registry read-only and
back when the control plane (the live server's ``GET /registry/maintenance``) says so, one
replica at a time; fails closed when it cannot ask, deregisters on a clean exit, and stays up
through a broken answer. Its parity with the Django side (Go durations, the environment)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from clusters.audit import AuditEvent
from registries.demo_image import write_oci_layout
from registries.maintenance import CollectionState, GarbageCollection, RegistryReplica
from registries.management.commands.registry_config import render_registry_config
from registries.models import RegistryBackend
from registries.registry_config_rules import GO_DURATION, duration_timedelta, registry_environment
from registries.services import replicas as replicas_service
from tests.support.containers import layout_digest, ok
from tests.support.processes import closed_url, require_binary, wait_until
from tests.support.replicas import ROOT, RunnerReplica

NOTIFICATIONS_TOKEN = "runner-test-notifications-token"


def _runner_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "registry_runner", ROOT / "scripts" / "registry_runner.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


runner = _runner_module()

CONFIG = {
    "http": {"addr": "127.0.0.1:5123", "draintimeout": "1m30s"},
    "auth": {"token": {"realm": "https://cp.example/registry/token", "service": "reg-a"}},
    "notifications": {
        "endpoints": [
            {
                "name": "off",
                "disabled": True,
                "url": "https://old.example/registry/notifications",
                "headers": {"Authorization": ["Bearer old"]},
            },
            {
                "name": "controlplane",
                "url": "https://events.example/cp/registry/notifications",
                "headers": {"Authorization": ["Bearer secret"]},
            },
        ]
    },
}


def _with_url(url: str) -> dict[str, object]:
    endpoint = {**CONFIG["notifications"]["endpoints"][1], "url": url}
    return {**CONFIG, "notifications": {"endpoints": [endpoint]}}


def test_the_runner_asks_next_to_the_notifications_endpoint_with_its_token() -> None:
    plane = runner.control_plane(CONFIG)

    # Where the token is meant to go (not the realm's origin), path prefix kept.
    assert plane == runner.ControlPlane(
        "https://events.example/cp/registry/maintenance", "Bearer secret", "reg-a"
    )
    assert runner.replica_name(CONFIG, "given") == "given"
    assert runner.replica_name(CONFIG, None).endswith(":5123")
    loopback = runner.control_plane(_with_url("http://127.0.0.1:8000/registry/notifications"))
    assert loopback.url == "http://127.0.0.1:8000/registry/maintenance"
    assert runner.control_plane(_with_url("http://localhost/registry/notifications")) is not None


def test_the_runner_sends_the_token_only_where_the_notifications_already_go() -> None:
    internal = runner.control_plane(_with_url("http://cp.internal:8000/registry/notifications"))
    assert internal is not None
    assert internal.url == "http://cp.internal:8000/registry/maintenance"
    with pytest.raises(runner.Refused, match="is no URL"):
        runner.control_plane(_with_url("ftp://cp.internal/registry/notifications"))


def test_without_an_enabled_notifications_endpoint_the_runner_does_not_poll() -> None:
    disabled = {**CONFIG, "notifications": {"endpoints": [CONFIG["notifications"]["endpoints"][0]]}}

    assert runner.control_plane(disabled) is None
    assert runner.control_plane({**CONFIG, "notifications": None}) is None
    assert runner.control_plane({**CONFIG, "auth": {}}) is None


@pytest.mark.parametrize(
    "text", ["30s", "1m30s", "168h", "90m", "1.5h", "500ms", "2h45m30.5s", "10us", "3µs", "7ns"]
)
def test_the_runner_reads_go_durations_as_the_configuration_rules_do(text: str) -> None:
    assert GO_DURATION.fullmatch(text)
    expected = duration_timedelta(text).total_seconds()  # a timedelta: whole microseconds
    assert runner.go_seconds(text, -1.0) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "environment",
    [
        {"REGISTRY_URL": "http://cp", "REGISTRY_HTTP_SECRET": "s", "KEEP": "1"},
        {"AWS_CA_BUNDLE": "/ca.pem", "KEEP": "1"},
        {"AWS_CA_BUNDLE": "/ca.pem", "SSL_CERT_FILE": "/other.pem"},
        {"AWS_CA_BUNDLE": "/ca.pem", "SSL_CERT_FILE": ""},
        {"AWS_CA_BUNDLE": "", "REGISTRY_STORAGE": "s3"},
    ],
)
@pytest.mark.integration
def test_the_script_scrubs_the_environment_as_the_collector_does(
    environment: dict[str, str], tmp_path: Path
) -> None:
    """scripts/run-registry (bash, before the runner) and drivers/collector.py's
    registry_environment prepare Distribution's environment the same way."""
    dump = tmp_path / "dump-env"
    dump.write_text("#!/bin/sh\nexec env -0\n")
    dump.chmod(0o700)
    base = {"PATH": os.environ["PATH"], "RUN_REGISTRY_PYTHON": str(dump)}
    ran = subprocess.run(  # noqa: S603 - our own script
        [str(ROOT / "scripts" / "run-registry"), "config.yml"],
        env={**base, **environment}, capture_output=True, check=True,
    )  # fmt: skip
    seen = dict(item.split("=", 1) for item in ran.stdout.decode().split("\0") if item)
    expected = registry_environment({**base, **environment})

    names = {*environment, "SSL_CERT_FILE"}
    assert {n: seen.get(n) for n in names} == {n: expected.get(n) for n in names}


@pytest.fixture
def notifying(settings, live_server):
    """Configurations rendered now send notifications (and so poll) to the live server."""
    settings.REGISTRY_NOTIFICATIONS_URL = f"{live_server.url}/registry/notifications"
    settings.REGISTRY_NOTIFICATIONS_TOKEN = NOTIFICATIONS_TOKEN
    settings.REGISTRY_GC_REPLICA_POLL_SECONDS = 0.3
    return settings


@pytest.fixture
def replica(notifying, registry_settings, workdir: Path):
    """A replica under the runner, the registry the control plane provisions on."""
    started = RunnerReplica(workdir, "replica-1").start()
    registry_settings.REGISTRY_URL = started.url
    registry_settings.REGISTRY_PUBLIC_HOST = started.host
    yield started
    started.stop()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_server", "container_tools")
def test_the_runner_restarts_the_registry_read_only_when_told_and_back(
    replica: RunnerReplica, ready_cluster, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    first, second = workdir / "first", workdir / "second"
    write_oci_layout(first, "before the window")
    write_oci_layout(second, "during the window")
    ok(skopeo.push(first, f"{a.url}/base:latest", a.secret))
    backend = RegistryBackend.objects.get(name="default")
    wait_until(lambda: RegistryReplica.objects.filter(name="replica-1").exists(), what="a report")

    # The window's read-only state, without the token endpoint's refusal: the registry refuses.
    window = GarbageCollection.objects.create(
        backend=backend, trigger="operator", state=CollectionState.READ_ONLY
    )
    replica.wait_mode("readonly")
    wait_until(
        lambda: RegistryReplica.objects.get(name="replica-1").mode == "readonly",
        what="the replica to report read-only",
    )
    refused = skopeo.push(second, f"{a.url}/app:latest", a.secret)
    pulled = skopeo.pull(f"{a.url}/base:latest", a.secret, workdir / "pulled")

    assert refused.returncode != 0
    # Distribution's own read-only refusal (why the token endpoint refuses first, with a reason).
    assert refused.stderr.endswith('StatusCode: 405, Method not allowed\\n"\n'), refused.stderr
    ok(pulled)
    assert layout_digest(workdir / "pulled") == layout_digest(first)
    copy = Path(replica.events("registry.runner.started")[-1]["config"])  # type: ignore[arg-type]
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(copy.read_text())["storage"]["maintenance"]["readonly"] == {
        "enabled": True
    }

    GarbageCollection.objects.filter(pk=window.pk).update(state=CollectionState.SUCCEEDED)
    replica.wait_mode("readwrite")
    wait_until(
        lambda: RegistryReplica.objects.get(name="replica-1").mode == "readwrite",
        what="the replica to report read-write",
    )
    ok(skopeo.push(second, f"{a.url}/app:latest", a.secret))
    modes = AuditEvent.objects.filter(type="REGISTRY_REPLICA_MODE_CHANGED").order_by("occurred_at")
    child = replica.events("registry.runner.started")[-1]["pid"]
    # The registry's own status: 0 after a drain (http.draintimeout set), else SIGTERM's 143.
    assert replica.stop() in (0, 128 + 15)
    assert not Path(f"/proc/{child}").exists()  # SIGTERM reached the registry, which exited
    assert not copy.parent.exists()  # the private copy went with the runner

    # A clean exit deregisters: the window no longer waits for this replica.
    assert not RegistryReplica.objects.filter(name="replica-1").exists()
    assert len(replica.events("registry.runner.deregistered")) == 1
    assert [(e.data["mode"], e.data["previous"]) for e in modes] == [
        ("readwrite", ""),
        ("readonly", "readwrite"),
        ("readwrite", "readonly"),
        ("stopped", "readwrite"),
    ]


def _at(replica: RunnerReplica, event: str, mode: str) -> str:
    """When ``replica``'s runner logged ``event`` for ``mode`` last (ISO time, sortable)."""
    return str([e for e in replica.events(event) if e["mode"] == mode][-1]["time"])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_server")
def test_replicas_switch_one_at_a_time_and_a_new_one_starts_in_the_window_s_mode(
    notifying, default_backend, workdir: Path
) -> None:
    a, b = RunnerReplica(workdir, "replica-a").start(), RunnerReplica(workdir, "replica-b").start()
    late = RunnerReplica(workdir, "replica-c")
    try:
        wait_until(lambda: RegistryReplica.objects.count() == 2, what="both replicas' reports")
        window = GarbageCollection.objects.create(
            backend=default_backend, trigger="operator", state=CollectionState.READ_ONLY
        )
        a.wait_mode("readonly")
        b.wait_mode("readonly")
        # b was told only once a had restarted read-only and said so: pulls never stopped.
        assert _at(b, "registry.runner.switching", "readonly") > _at(
            a, "registry.runner.started", "readonly"
        )
        late.start()
        assert [e["mode"] for e in late.events("registry.runner.started")] == ["readonly"]

        GarbageCollection.objects.filter(pk=window.pk).update(state=CollectionState.SUCCEEDED)
        for replica in (a, b, late):
            replica.wait_mode("readwrite")
        assert _at(b, "registry.runner.switching", "readwrite") > _at(
            a, "registry.runner.started", "readwrite"
        )
        assert _at(late, "registry.runner.switching", "readwrite") > _at(
            b, "registry.runner.started", "readwrite"
        )
    finally:
        for replica in (a, b, late):
            replica.stop()
    assert not RegistryReplica.objects.exists()  # each deregistered on its way out


@pytest.mark.integration
def test_a_control_plane_that_does_not_answer_at_start_leaves_the_registry_read_only(
    settings, workdir: Path
) -> None:
    settings.REGISTRY_NOTIFICATIONS_URL = f"{closed_url()}/registry/notifications"
    settings.REGISTRY_NOTIFICATIONS_TOKEN = NOTIFICATIONS_TOKEN
    replica = RunnerReplica(workdir, "lonely")
    config = render_registry_config(
        addr=f"127.0.0.1:{replica.port}", storage_dir=str(replica.data), realm=f"{closed_url()}/t"
    )
    replica.start(config=config)
    try:
        wait_until(lambda: len(replica.events("registry.runner.unreachable")) >= 1, what="a poll")
        # Fail closed: unknown to the control plane, so never writing beside a collection.
        assert [e["mode"] for e in replica.events("registry.runner.started")] == ["readonly"]
        assert replica.answers()
        assert len(replica.events("registry.runner.unreachable")) == 1  # said once, not per poll
    finally:
        replica.stop()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_server", "default_backend")
def test_a_replica_refused_beyond_the_cap_starts_read_only_and_logs_why(
    notifying, workdir: Path, monkeypatch
) -> None:
    monkeypatch.setattr(replicas_service, "MAX_REPLICAS_PER_BACKEND", 0)
    replica = RunnerReplica(workdir, "one-too-many")
    try:
        replica.start()
        [refused] = replica.events("registry.runner.unreachable")
        assert "HTTP Error 409" in str(refused["error"])
        assert "already has 0 replicas, the most it keeps" in str(refused["error"])
        assert [e["mode"] for e in replica.events("registry.runner.started")] == ["readonly"]
    finally:
        replica.stop()
    assert not RegistryReplica.objects.exists()


@pytest.mark.integration
def test_a_sigterm_while_the_registry_restarts_reaches_the_new_one(
    workdir: Path, monkeypatch
) -> None:
    """The signal came between the old registry's exit and the new one's start: the handler
    had no child to pass it to, so ``start`` passes it on (the runner must not serve on)."""
    for name in [name for name in os.environ if name.startswith("REGISTRY_")]:
        monkeypatch.delenv(name)  # as scripts/run-registry does before the runner
    replica = RunnerReplica(workdir, "racing")
    config = yaml.safe_load(
        render_registry_config(addr=replica.host, storage_dir=str(replica.data))
    )
    plane = runner.ControlPlane("http://127.0.0.1:9/registry/maintenance", "Bearer x", "s")
    racing = runner.Runner(replica.config_path, config, plane, "racing")
    racing.binary = require_binary("docker-registry", path=os.environ.get("DOCKER_REGISTRY_BIN"))
    racing.stopping = True  # forward() ran with no registry to forward to
    try:
        racing.start()
        # Stopped by the signal (drained: 0), not serving on (a timeout), not refusing to start.
        assert racing.started().wait(timeout=10) in (0, -15)
    finally:
        racing.stop_child(9)
        shutil.rmtree(racing.folder, ignore_errors=True)


class GarbageServer:
    """A TCP server on 127.0.0.1 that answers every request with bytes that are not HTTP (what
    a proxy or a wrong port may send): ``http.client`` raises ``BadStatusLine``, no ``OSError``."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                self.requests += 1
                connection.sendall(b"garbage\r\n\r\n")

    def close(self) -> None:
        self.socket.close()


@pytest.mark.integration
def test_the_runner_survives_an_answer_that_is_not_http(settings, workdir: Path) -> None:
    server = GarbageServer()
    settings.REGISTRY_NOTIFICATIONS_URL = f"http://127.0.0.1:{server.port}/registry/notifications"
    settings.REGISTRY_NOTIFICATIONS_TOKEN = NOTIFICATIONS_TOKEN
    replica = RunnerReplica(workdir, "confused")
    try:
        replica.start()
        wait_until(lambda: server.requests >= 3, timeout=20, what="three polls")
        assert replica.answers()  # the runner and its registry are still there
        [unreachable] = replica.events("registry.runner.unreachable")
        assert str(unreachable["error"]).startswith("BadStatusLine")
        assert [e["mode"] for e in replica.events("registry.runner.started")] == ["readonly"]
    finally:
        replica.stop()
        server.close()


@pytest.mark.integration
def test_without_notifications_the_script_execs_the_registry_with_a_warning(
    workdir: Path,
) -> None:
    replica = RunnerReplica(workdir, "plain")
    config = yaml.safe_load(
        render_registry_config(addr=f"127.0.0.1:{replica.port}", storage_dir=str(replica.data))
    )
    config["notifications"] = {"endpoints": []}
    replica.start(config=yaml.safe_dump(config))
    try:
        assert replica.process is not None
        comm = Path(f"/proc/{replica.process.pid}/comm").read_text().strip()
        assert comm == os.path.basename(os.environ.get("DOCKER_REGISTRY_BIN", "docker-registry"))
        assert replica.events("registry.runner.started") == []
        [warning] = replica.events("registry.runner.unmanaged")
        assert warning["level"] == "warning"
        assert "cannot take part in maintenance windows" in str(warning["error"])
    finally:
        replica.stop()
