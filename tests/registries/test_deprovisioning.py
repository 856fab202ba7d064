"""Deprovisioning: deleting a cluster deletes its images, unpublishes its registry URL and stops
every grant in its namespace, which is never given out again. Against the real registry, with
images pushed by skopeo; the deprovisioning attempt runs in-process (the Celery path is in
test_end_to_end)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jwt
import pytest
import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from clusters import services
from clusters.models import AgentEnvironmentVariable, Cluster, ClusterAgentToken, Queue
from registries.conditions import error_detail
from registries.demo_image import write_oci_layout
from registries.drivers.distribution import DistributionDriver
from registries.models import Registry, State
from registries.reconciler import registries_claim_due
from registries.services import (
    access_token_window,
    registry_deprovision,
    registry_deprovision_start,
    registry_provision,
    registry_retry,
)
from registries.tasks import reconcile_registries
from registries.tokens import Principal, Scope, token_issue
from tests.support.processes import closed_url

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_server", "container_tools"),
]


def push(skopeo, workdir: Path, reference: str, secret: str) -> None:
    """Push a small image whose content is unique to ``reference``."""
    layout = workdir / reference.replace("/", "_").replace(":", "_")
    write_oci_layout(layout, f"image {reference}")
    result = skopeo.push(layout, reference, secret)
    assert result.returncode == 0, result.stderr


def final_sweep(registry: Registry) -> str:
    """Let every registry token issued before the deletion expire (move the clock of the row
    back), let Celery beat find the final sweep due, and run it. Returns the registry's state."""
    past = timezone.now() - access_token_window() - timedelta(seconds=1)
    Registry.objects.filter(pk=registry.pk).update(
        deprovision_requested_at=past, next_attempt_at=past
    )
    assert [r.pk for r in registries_claim_due()] == [registry.pk]
    registry_deprovision(registry_id=registry.pk)
    registry.refresh_from_db()
    return registry.state


def control_plane_token(namespace: str, name: str) -> str:
    scope = Scope("repository", f"{namespace}/{name}", ("pull",))
    return token_issue(Principal.control_plane(namespace), [scope]).token


def tags(namespace: str, name: str) -> list[str]:
    """The tags of ``<namespace>/<name>`` as the registry lists them to the control plane."""
    token = control_plane_token(namespace, name)
    return DistributionDriver.from_settings().tags(f"{namespace}/{name}", token=token)


def test_deleting_a_cluster_deletes_its_images_and_variable_and_nothing_of_other_clusters(
    ready_cluster, skopeo, workdir: Path, broker_queue
) -> None:
    a, b = ready_cluster("A"), ready_cluster("B")
    for reference in (f"{a.url}/base:latest", f"{a.url}/base:v1", f"{a.url}/app:latest"):
        push(skopeo, workdir, reference, a.secret)
    push(skopeo, workdir, f"{b.url}/base:latest", b.secret)
    broker_queue.drain()

    services.cluster_delete(cluster=a.cluster)

    registry = Registry.objects.get(pk=a.registry.pk)
    assert (registry.state, registry.cluster_id) == (State.DEPROVISIONING, None)
    assert registry.deprovision_requested_at is not None
    assert registry.events.last().message == f"cluster 'A' ({a.cluster.pk}) deleted"
    assert broker_queue.drain() == [("registries.deprovision", (str(registry.pk),))]
    assert not Cluster.objects.filter(pk=a.cluster.pk).exists()
    assert not ClusterAgentToken.objects.filter(pk=a.token.pk).exists()
    assert not AgentEnvironmentVariable.objects.filter(value=a.url).exists()
    assert not Queue.objects.filter(cluster_id=a.cluster.pk).exists()

    result = registry_deprovision(registry_id=registry.pk)

    registry.refresh_from_db()
    last_token_expiry = registry.deprovision_requested_at + access_token_window()
    assert (result.state, registry.state) == (State.DEPROVISIONING, State.DEPROVISIONING)
    assert registry.next_attempt_at == last_token_expiry
    assert registry.events.last().message == (
        f"deleted 3 manifest(s) from {a.namespace}; sweeping again after "
        f"{last_token_expiry:%Y-%m-%d %H:%M:%S} UTC, when every registry token issued before "
        "has expired"
    )
    assert tags(a.namespace, "base") == []
    assert tags(a.namespace, "app") == []
    manifest = requests.head(
        f"{settings.REGISTRY_URL}/v2/{a.namespace}/base/manifests/latest",
        headers={"Authorization": f"Bearer {control_plane_token(a.namespace, 'base')}"},
        timeout=5,
    )
    assert manifest.status_code == 404
    # Cluster B's image and variable are untouched.
    assert tags(b.namespace, "base") == ["latest"]
    assert AgentEnvironmentVariable.objects.get(cluster=b.cluster).value == b.url
    # The old agent token gets nothing: it went with the cluster.
    refused = skopeo.inspect(f"{a.url}/base:latest", a.secret)
    assert "Invalid, expired or revoked agent token." in refused.stderr
    # Once every token issued before the deletion has expired, the final sweep ends it.
    assert final_sweep(registry) == State.DELETED
    assert registry.events.last().message == f"deleted 0 manifest(s) from {a.namespace}"
    assert registry_deprovision(registry_id=registry.pk).state == State.DELETED  # harmless
    assert [event.to_state for event in registry.events.all()] == [
        State.PENDING,
        State.PROVISIONING,
        State.READY,
        State.DEPROVISIONING,
        State.DEPROVISIONING,
        State.DELETED,
    ]


def test_an_image_pushed_with_a_token_issued_before_the_deletion_is_swept_at_the_end(
    ready_cluster, skopeo, workdir: Path, request_token
) -> None:
    a = ready_cluster("A")
    early = request_token(a.secret, f"repository:{a.namespace}/late:pull,push")["token"]
    services.cluster_delete(cluster=a.cluster)
    assert registry_deprovision(registry_id=a.registry.pk).state == State.DEPROVISIONING

    # Distribution cannot revoke a token: until it expires, it still pushes.
    write_oci_layout(workdir / "late", "pushed late")
    late = skopeo(
        "copy", "--dest-tls-verify=false", "--dest-registry-token", early,
        f"oci:{workdir / 'late'}:latest", f"docker://{a.url}/late:latest",
    )  # fmt: skip
    assert late.returncode == 0, late.stderr
    assert tags(a.namespace, "late") == ["latest"]

    registry = Registry.objects.get(pk=a.registry.pk)
    assert final_sweep(registry) == State.DELETED
    assert registry.events.last().message == f"deleted 1 manifest(s) from {a.namespace}"
    assert tags(a.namespace, "late") == []


def test_deprovisioning_follows_the_catalog_and_tag_lists_page_by_page(
    ready_cluster, skopeo, workdir: Path, registry_settings
) -> None:
    a, b = ready_cluster("Paged"), ready_cluster("Neighbour")
    references = [f"{a.url}/repo-{r}:tag-{t}" for r in range(3) for t in range(3)]
    for reference in references:
        push(skopeo, workdir, reference, a.secret)
    push(skopeo, workdir, f"{b.url}/base:latest", b.secret)
    driver = DistributionDriver.from_settings()
    paged = DistributionDriver(
        api_url=driver.api_url, public_host=driver.public_host, timeout=5, page_size=2
    )

    assert sorted(paged.repositories(namespace=a.namespace)) == [
        f"{a.namespace}/repo-{r}" for r in range(3)
    ]
    assert paged.deprovision(namespace=a.namespace) == 9

    for r in range(3):
        assert tags(a.namespace, f"repo-{r}") == []
    assert tags(b.namespace, "base") == ["latest"]
    assert paged.deprovision(namespace=a.namespace) == 0  # nothing left: harmless to repeat


def test_a_deprovisioning_registry_grants_nothing_even_while_its_cluster_exists(
    ready_cluster, skopeo, workdir: Path
) -> None:
    a = ready_cluster("A")
    push(skopeo, workdir, f"{a.url}/base:latest", a.secret)

    registry_deprovision_start(registry=a.registry, reason="operator asked")

    refused = skopeo.inspect(f"{a.url}/base:latest", a.secret)
    assert "denied: requested access to the resource is denied" in refused.stderr
    assert registry_deprovision(registry_id=a.registry.pk).state == State.DEPROVISIONING
    # With the cluster still there, its variable is removed by the deprovisioning itself.
    assert not AgentEnvironmentVariable.objects.filter(cluster=a.cluster).exists()


def test_a_namespace_is_never_given_out_again(ready_cluster) -> None:
    a = ready_cluster("Reused name")
    services.cluster_delete(cluster=a.cluster)
    registry_deprovision(registry_id=a.registry.pk)
    assert final_sweep(a.registry) == State.DELETED

    again = ready_cluster("Reused name")

    assert again.namespace != a.namespace
    assert Registry.objects.filter(namespace=a.namespace, state=State.DELETED).exists()
    with pytest.raises(ValidationError):
        Registry(cluster=again.cluster, namespace=a.namespace, driver="distribution").full_clean()


def test_deleting_the_last_hosted_queue_keeps_the_registry_and_its_images(
    ready_cluster, skopeo, workdir: Path, broker_queue
) -> None:
    a = ready_cluster("A")
    push(skopeo, workdir, f"{a.url}/base:latest", a.secret)

    services.queue_delete(queue=a.cluster.queues.get(key="linux"))

    registry = Registry.objects.get(pk=a.registry.pk)
    assert registry.state == State.READY
    assert AgentEnvironmentVariable.objects.get(cluster=a.cluster).value == a.url
    assert tags(a.namespace, "base") == ["latest"]
    # A new hosted queue finds the same registry: no second registry, no provisioning.
    broker_queue.drain()
    services.queue_create(cluster=a.cluster, key="linux-2", instance_shape="LINUX_AMD64_2X4")
    assert Registry.objects.filter(cluster=a.cluster).get().pk == registry.pk
    assert broker_queue.drain() == []


def test_a_failed_deprovisioning_is_retried_as_deprovisioning_not_provisioning(
    ready_cluster, settings, broker_queue
) -> None:
    a = ready_cluster("A")
    original = settings.REGISTRY_URL
    settings.REGISTRY_URL = closed_url()
    settings.REGISTRY_PROVISION_MAX_ATTEMPTS = 1
    services.cluster_delete(cluster=a.cluster)

    failed = registry_deprovision(registry_id=a.registry.pk)

    registry = Registry.objects.get(pk=a.registry.pk)
    assert (failed.state, failed.retry, registry.state) == (State.FAILED, False, State.FAILED)
    assert registry.last_error == "The registry did not answer (connection refused)"
    assert "Connection refused" in error_detail(registry)
    broker_queue.drain()

    settings.REGISTRY_URL = original
    registry_retry(registry=registry)

    registry.refresh_from_db()
    assert (registry.state, registry.attempts) == (State.DEPROVISIONING, 0)
    assert broker_queue.drain() == [("registries.deprovision", (str(registry.pk),))]
    registry_deprovision(registry_id=registry.pk)
    assert final_sweep(registry) == State.DELETED
    # A deleted registry is never provisioned again.
    assert registry_provision(registry_id=registry.pk).state == State.DELETED


def test_a_stalled_deprovisioning_is_redriven_once_per_lease(ready_cluster, broker_queue) -> None:
    a = ready_cluster("A")
    services.cluster_delete(cluster=a.cluster)
    broker_queue.drain()  # the message is lost
    # One reconcile interval later, nothing has moved it.
    Registry.objects.filter(pk=a.registry.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )

    assert reconcile_registries.apply().get()["enqueued"] == [str(a.registry.pk)]
    assert broker_queue.drain() == [("registries.deprovision", (str(a.registry.pk),))]
    # Leased: the next pass leaves it to the attempt it enqueued.
    assert reconcile_registries.apply().get()["enqueued"] == []


def test_a_swept_registry_waits_for_its_final_sweep(ready_cluster, broker_queue) -> None:
    a = ready_cluster("A")
    services.cluster_delete(cluster=a.cluster)
    registry_deprovision(registry_id=a.registry.pk)
    broker_queue.drain()
    Registry.objects.filter(pk=a.registry.pk).update(
        state_changed_at=timezone.now() - timedelta(days=1)
    )

    # Not stalled, however long ago it changed: it is waiting for its tokens to expire.
    assert reconcile_registries.apply().get()["enqueued"] == []


def test_the_token_endpoint_stops_granting_when_deprovisioning_starts(
    ready_cluster, request_token
) -> None:
    a = ready_cluster("A")

    def granted() -> list[dict[str, object]]:
        token = request_token(a.secret, f"repository:{a.namespace}/base:pull,push")["token"]
        return jwt.decode(token, options={"verify_signature": False})["access"]

    assert granted() == [
        {"type": "repository", "name": f"{a.namespace}/base", "actions": ["pull", "push", "delete"]}
    ]
    registry_deprovision_start(registry=a.registry, reason="operator asked")
    assert granted() == []
