"""``scripts/run-registry``: the runner that switches a real Distribution registry read-only and
back when the control plane (the live server's ``GET /registry/maintenance``) says so."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from clusters.audit import AuditEvent
from registries.demo_image import write_oci_layout
from registries.maintenance import CollectionState, GarbageCollection, RegistryReplica
from registries.management.commands.registry_config import render_registry_config
from registries.models import RegistryBackend
from tests.support.containers import layout_digest, ok
from tests.support.processes import closed_url, wait_until
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
            {"name": "off", "disabled": True, "headers": {"Authorization": ["Bearer old"]}},
            {"name": "controlplane", "headers": {"Authorization": ["Bearer secret"]}},
        ]
    },
}


def test_the_runner_finds_the_control_plane_and_its_token_in_the_configuration() -> None:
    plane = runner.control_plane(CONFIG)

    assert plane == runner.ControlPlane(
        "https://cp.example/registry/maintenance", "Bearer secret", "reg-a"
    )
    assert runner.replica_name(CONFIG, "given") == "given"
    assert runner.replica_name(CONFIG, None).endswith(":5123")
    assert runner.go_seconds(CONFIG["http"]["draintimeout"], 0.0) == 90.0


def test_without_an_enabled_notifications_endpoint_the_runner_does_not_poll() -> None:
    disabled = {**CONFIG, "notifications": {"endpoints": [CONFIG["notifications"]["endpoints"][0]]}}

    assert runner.control_plane(disabled) is None
    assert runner.control_plane({**CONFIG, "notifications": None}) is None
    assert runner.control_plane({**CONFIG, "auth": {}}) is None


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
    assert [(e.data["mode"], e.data["previous"]) for e in modes] == [
        ("readwrite", ""),
        ("readonly", "readwrite"),
        ("readwrite", "readonly"),
    ]

    child = replica.events("registry.runner.started")[-1]["pid"]
    # The registry's own status: 0 after a drain (http.draintimeout set), else SIGTERM's 143.
    assert replica.stop() in (0, 128 + 15)
    assert not Path(f"/proc/{child}").exists()  # SIGTERM reached the registry, which exited


@pytest.mark.integration
def test_a_control_plane_that_does_not_answer_changes_nothing(settings, workdir: Path) -> None:
    settings.REGISTRY_NOTIFICATIONS_URL = f"{closed_url()}/registry/notifications"
    settings.REGISTRY_NOTIFICATIONS_TOKEN = NOTIFICATIONS_TOKEN
    replica = RunnerReplica(workdir, "lonely")
    config = render_registry_config(
        addr=f"127.0.0.1:{replica.port}", storage_dir=str(replica.data), realm=f"{closed_url()}/t"
    )
    replica.start(config=config)
    try:
        wait_until(lambda: replica.events("registry.runner.unreachable"), what="a failed poll")
        assert replica.answers()
        assert [e["mode"] for e in replica.events("registry.runner.started")] == ["readwrite"]
        assert len(replica.events("registry.runner.unreachable")) == 1  # said once, not per poll
    finally:
        replica.stop()


@pytest.mark.integration
def test_without_notifications_the_script_execs_the_registry_as_before(workdir: Path) -> None:
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
    finally:
        replica.stop()
