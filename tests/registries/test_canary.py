"""Health canaries: a ready registry's namespace takes a blob, gives it back and deletes it; a
registry that fails its canary loses ``Ready`` and regains it by itself once it passes. Against
real registry processes, one of which is stopped and started again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from clusters.models import AgentEnvironmentVariable
from registries import conditions
from registries.drivers.distribution import CANARY_REPOSITORY
from registries.models import REGISTRY_URL_VARIABLE, Registry, RegistryBackend, State
from registries.services import (
    backend_canary,
    registry_canary,
    registry_create_for_cluster,
    registry_provision,
)
from registries.tasks import run_canaries
from registries.tokens import Principal, Scope, token_issue
from tests.clusters.factories import ClusterFactory
from tests.support.processes import RegistryProcess

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_registry(workdir: Path, settings) -> Iterator[RegistryProcess]:
    """A registry process of this test's own, which the test may stop and start again."""
    registry = RegistryProcess(workdir).start()
    settings.REGISTRY_URL = registry.url
    settings.REGISTRY_PUBLIC_HOST = registry.host
    yield registry
    registry.stop()


def ready_registry() -> Registry:
    registry = registry_create_for_cluster(cluster=ClusterFactory(organization__slug="acme"))
    assert registry_provision(registry_id=registry.pk).state == State.READY
    registry.refresh_from_db()
    return registry


def ready_condition(registry: Registry) -> dict:
    registry.refresh_from_db()
    condition = conditions.condition_get(registry, conditions.READY)
    assert condition is not None
    return condition


def test_a_passing_canary_leaves_nothing_behind(registry_settings, registry_process) -> None:
    registry = ready_registry()
    before = ready_condition(registry)

    result = registry_canary(registry_id=registry.pk)

    assert result is not None
    assert result.ok, result.seen
    registry.refresh_from_db()
    assert (registry.canary_ok, registry.canary_latency) == (True, result.latency)
    assert registry.canary_message.startswith("pushed, read back and deleted sha256:")
    assert registry.canary_message.endswith(f"in {registry.namespace}/{CANARY_REPOSITORY}")
    assert ready_condition(registry) == before  # nothing to say: it was ready and still is
    # The blob is gone, and there never was a tag or manifest for jobs (or deprovisioning) to see.
    digest = registry.canary_message.split()[5]
    repository = f"{registry.namespace}/{CANARY_REPOSITORY}"
    token = token_issue(
        Principal.control_plane(registry.namespace), [Scope("repository", repository, ("pull",))]
    ).token
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{registry_process.url}/v2/{repository}"
    assert requests.get(f"{base}/blobs/{digest}", headers=headers, timeout=5).status_code == 404
    assert requests.get(f"{base}/tags/list", headers=headers, timeout=5).status_code == 404


@pytest.mark.integration  # own_registry starts a registry of its own
def test_a_failing_canary_drops_ready_and_a_passing_one_restores_it(own_registry) -> None:
    registry = ready_registry()

    own_registry.stop()
    failed = registry_canary(registry_id=registry.pk)

    assert failed is not None
    assert not failed.ok
    down = ready_condition(registry)
    assert (down["status"], down["reason"]) == ("False", "CanaryFailed")
    # Tenants read the failure's name; operators keep the request and the library's words.
    assert down["message"] == (
        "The health canary failed: The registry did not answer (connection refused)"
    )
    assert down["detail"].startswith("POST ")
    assert "Connection refused" in down["detail"]
    assert (registry.state, registry.canary_ok) == (State.READY, False)  # it reports, no more

    own_registry.start()
    passed = registry_canary(registry_id=registry.pk)

    assert passed is not None
    assert passed.ok
    up = ready_condition(registry)
    assert (up["status"], up["reason"]) == ("True", "CanaryPassed")
    assert up["message"].startswith("The health canary passes again (")
    assert up["last_transition_time"] > down["last_transition_time"]
    assert registry.canary_ok is True


def test_a_passing_canary_does_not_hide_a_url_that_cannot_be_published(
    registry_settings, reconcile
) -> None:
    registry = ready_registry()
    AgentEnvironmentVariable.objects.filter(cluster=registry.cluster).delete()
    AgentEnvironmentVariable.objects.create(
        cluster=registry.cluster, name=REGISTRY_URL_VARIABLE, value="mine", source="user"
    )

    for _ in range(2):
        reconcile()
        passed = registry_canary(registry_id=registry.pk)
        assert passed is not None
        assert passed.ok
        ready = ready_condition(registry)
        assert (ready["status"], ready["reason"]) == ("False", "UrlNotPublished")


def test_only_ready_registries_have_canaries(
    registry_settings, broker_queue, django_capture_on_commit_callbacks
) -> None:
    ready = ready_registry()
    pending = registry_create_for_cluster(cluster=ClusterFactory(organization__slug="acme"))
    broker_queue.drain()

    assert registry_canary(registry_id=pending.pk) is None
    assert run_canaries.apply().get() == [str(ready.pk)]
    assert broker_queue.drain() == [("registries.canary", (str(ready.pk),))]


@pytest.mark.integration  # own_registry starts a registry of its own
def test_during_a_maintenance_window_canaries_do_not_push_and_ready_stays(own_registry) -> None:
    registry = ready_registry()
    backend = registry.backend
    before = ready_condition(registry)
    # The window refuses pushes; the replicas then restart read-only (here: not answering).
    RegistryBackend.objects.filter(pk=backend.pk).update(
        pushes_refused_until=timezone.now() + timedelta(seconds=300)
    )
    own_registry.stop()

    waiting = registry_canary(registry_id=registry.pk)
    whole = backend_canary(backend=backend.name)

    assert waiting is not None
    assert (waiting.ok, waiting.maintenance) == (True, True)
    assert waiting.seen.startswith(
        "Registry maintenance: garbage collection on this registry's backend refuses pushes for "
    )
    assert waiting.seen.endswith(" more seconds; the canary does not push until it ends.")
    assert (whole.result.maintenance, whole.recorded) == (True, 0)
    assert ready_condition(registry) == before  # still Ready: nothing was recorded
    assert (registry.canary_ok, registry.canary_at) == (None, None)

    # Once the window ends, the canary runs again, and sees the outage.
    RegistryBackend.objects.filter(pk=backend.pk).update(pushes_refused_until=timezone.now())
    failed = registry_canary(registry_id=registry.pk)
    assert failed is not None
    assert (failed.ok, failed.maintenance) == (False, False)
    assert ready_condition(registry)["reason"] == "CanaryFailed"
