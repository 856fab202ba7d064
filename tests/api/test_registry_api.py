"""``/v2/organizations/{org}/clusters/{cluster}/registry``: the cluster's registry, its Ready
condition and its history; ``/registry/retry`` starts a failed registry again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from clusters import services
from clusters.models import Cluster
from registries import conditions
from registries.models import Registry, RegistryEvent, State
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=dt.UTC)
PROVISION = "registries.provision"
DEPROVISION = "registries.deprovision"


@pytest.fixture
def cluster(api) -> Cluster:
    return services.cluster_create(organization=api.organization, name="Open Source")


def registry_path(cluster: Cluster) -> str:
    return f"/clusters/{cluster.pk}/registry"


def make_registry(cluster: Cluster, state: str = State.READY, **fields: Any) -> Registry:
    namespace = f"acme/{cluster.pk.hex[:12]}"
    defaults: dict[str, Any] = {
        "url": f"registry.example.com/{namespace}" if state == State.READY else "",
        "created_at": T0,
        "state_changed_at": T0,
    }
    registry = Registry(
        cluster=cluster, namespace=namespace, driver="distribution", state=state,
        **{**defaults, **fields},
    )  # fmt: skip
    # Ready as the services set it on the registry's last transition.
    conditions.ready_from_state(registry, now=registry.state_changed_at)
    registry.save(force_insert=True)
    return registry


def add_event(
    registry: Registry, from_state: str, to_state: str, seconds: float, **fields: Any
) -> RegistryEvent:
    return RegistryEvent.objects.create(
        registry=registry,
        from_state=from_state,
        to_state=to_state,
        created_at=T0 + dt.timedelta(seconds=seconds),
        **fields,
    )


# --- read ----------------------------------------------------------------------------------


def test_a_ready_registry_with_its_condition_and_its_events_oldest_first(api, cluster) -> None:
    ready_at = T0 + dt.timedelta(seconds=7)
    registry = make_registry(cluster, attempts=1, state_changed_at=ready_at, ready_at=ready_at)
    # Written out of order: the events are ordered by time, not by insertion.
    add_event(
        registry,
        State.PROVISIONING,
        State.READY,
        7,
        attempt=1,
        duration=dt.timedelta(seconds=4, microseconds=500_000),
    )
    add_event(registry, "", State.PENDING, 0, message="created")
    add_event(registry, State.PENDING, State.PROVISIONING, 2.5, attempt=1,
              duration=dt.timedelta(seconds=2.5))  # fmt: skip

    response = api.get(registry_path(cluster))

    assert response.status_code == 200
    assert response.json() == {
        "id": str(registry.pk),
        "state": "ready",
        "url": f"registry.example.com/acme/{cluster.pk.hex[:12]}",
        "namespace": f"acme/{cluster.pk.hex[:12]}",
        "driver": "distribution",
        "attempts": 1,
        "last_error": None,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Provisioned",
                "message": "The registry is ready; the cluster's hosted jobs receive its URL.",
                "last_transition_time": "2025-03-04T05:06:14.890Z",
            }
        ],
        "canary": None,
        "created_at": "2025-03-04T05:06:07.890Z",
        "ready_at": "2025-03-04T05:06:14.890Z",
        "state_changed_at": "2025-03-04T05:06:14.890Z",
        "events": [
            {
                "from_state": None,
                "to_state": "pending",
                "attempt": 0,
                "duration_seconds": 0.0,
                "message": "created",
                "created_at": "2025-03-04T05:06:07.890Z",
            },
            {
                "from_state": "pending",
                "to_state": "provisioning",
                "attempt": 1,
                "duration_seconds": 2.5,
                "message": "",
                "created_at": "2025-03-04T05:06:10.390Z",
            },
            {
                "from_state": "provisioning",
                "to_state": "ready",
                "attempt": 1,
                "duration_seconds": 4.5,
                "message": "",
                "created_at": "2025-03-04T05:06:14.890Z",
            },
        ],
    }


@pytest.mark.parametrize(
    ("state", "fields", "reason", "message"),
    [
        (State.PENDING, {}, "Pending",
         "Provisioning is queued: a worker will create the registry shortly."),
        (State.PENDING, {"last_error": "registry unavailable: connection refused"}, "Pending",
         "registry unavailable: connection refused"),
        (State.PROVISIONING, {}, "Provisioning", "A worker is creating the registry."),
        (State.FAILED, {"last_error": "namespace refused"}, "ProvisioningFailed",
         "namespace refused"),
        (State.FAILED, {}, "ProvisioningFailed",
         "Provisioning failed; retry it once the cause is fixed."),
        (State.FAILED, {"last_error": "catalog unavailable", "deprovision_requested_at": T0},
         "DeprovisioningFailed", "catalog unavailable"),
        (State.DEPROVISIONING, {"deprovision_requested_at": T0}, "Deprovisioning",
         "The registry is being deleted: it grants nothing any more."),
    ],
)  # fmt: skip
def test_a_registry_that_is_not_ready_says_why(api, cluster, state, fields, reason, message):
    make_registry(cluster, state=state, **fields)

    body = api.get(registry_path(cluster)).json()

    assert body["state"] == state
    assert body["url"] is None
    assert body["ready_at"] is None
    assert body["last_error"] == (fields.get("last_error") or None)
    assert body["conditions"] == [
        {
            "type": "Ready",
            "status": "False",
            "reason": reason,
            "message": message,
            "last_transition_time": "2025-03-04T05:06:07.890Z",
        }
    ]
    assert body["events"] == []


def test_the_last_health_canary_is_shown(api, cluster) -> None:
    make_registry(
        cluster,
        canary_at=T0,
        canary_ok=False,
        canary_latency=dt.timedelta(milliseconds=12.34),
        canary_message="POST …/blobs/uploads/ answered 503",
    )

    body = api.get(registry_path(cluster)).json()

    assert body["canary"] == {
        "at": "2025-03-04T05:06:07.890Z",
        "passed": False,
        "latency_ms": 12.3,
        "message": "POST …/blobs/uploads/ answered 503",
    }


def test_a_cluster_without_a_registry_is_404(api, cluster) -> None:
    other = services.cluster_create(organization=api.organization, name="Other")
    make_registry(other)

    response = api.get(registry_path(cluster))

    assert response.status_code == 404
    assert response.json() == {"message": "No registry found"}


@pytest.mark.parametrize("cluster_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_cluster_is_404(api, cluster_id) -> None:
    for response in (
        api.get(f"/clusters/{cluster_id}/registry"),
        api.post(f"/clusters/{cluster_id}/registry/retry"),
    ):
        assert response.status_code == 404
        assert response.json() == {"message": "No cluster found"}


def test_reading_a_registry_with_1_or_20_events_takes_the_same_number_of_queries(
    api, cluster
) -> None:
    registry = make_registry(cluster)

    def queries() -> int:
        # The API token (with its user and organization), the cluster, the registry, its events.
        with expected_queries("registries-api:registry") as captured:
            assert api.get(registry_path(cluster)).status_code == 200
        return len(captured)

    add_event(registry, "", State.PENDING, 0)
    one = queries()
    for index in range(19):
        add_event(registry, State.PENDING, State.PROVISIONING, index + 1)
    assert queries() == one
    assert len(api.get(registry_path(cluster)).json()["events"]) == 20


# --- retry ---------------------------------------------------------------------------------


def test_retrying_a_failed_registry_makes_it_pending_and_enqueues_its_provisioning(
    api, cluster, broker_queue, django_capture_on_commit_callbacks
) -> None:
    registry = make_registry(cluster, State.FAILED, attempts=5, last_error="namespace refused")
    add_event(registry, "", State.PENDING, 0, message="created")

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{registry_path(cluster)}/retry")

    assert response.status_code == 200
    body = response.json()
    registry.refresh_from_db()
    assert registry.state == State.PENDING
    assert (body["state"], body["attempts"]) == ("pending", 0)
    ready, synced = body["conditions"]
    # Still not ready: the condition's status, and so its transition time, did not change.
    assert (ready["status"], ready["reason"]) == ("False", "Pending")
    assert ready["last_transition_time"] == "2025-03-04T05:06:07.890Z"
    assert synced == {
        "type": "Synced",
        "status": "Unknown",
        "reason": "RetryRequested",
        "message": "retry requested after: namespace refused",
        "last_transition_time": body["state_changed_at"],
    }
    assert [event["to_state"] for event in body["events"]] == ["pending", "pending"]
    assert body["events"][-1] == {
        "from_state": "failed",
        "to_state": "pending",
        "attempt": 0,
        "duration_seconds": body["events"][-1]["duration_seconds"],
        "message": "retry requested after: namespace refused",  # the error stays in history
        "created_at": body["state_changed_at"],
    }
    assert body["last_error"] is None
    assert body == api.get(registry_path(cluster)).json()
    assert broker_queue.drain() == [(PROVISION, (str(registry.pk),))]


def test_retrying_a_failed_deprovisioning_deprovisions_again(
    api, cluster, broker_queue, django_capture_on_commit_callbacks
) -> None:
    registry = make_registry(cluster, State.FAILED, deprovision_requested_at=T0)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{registry_path(cluster)}/retry")

    assert response.status_code == 200
    assert response.json()["state"] == "deprovisioning"
    assert broker_queue.drain() == [(DEPROVISION, (str(registry.pk),))]


@pytest.mark.parametrize("state", [State.READY, State.PENDING, State.PROVISIONING])
def test_retrying_a_registry_that_has_not_failed_is_422_and_changes_nothing(
    api, cluster, broker_queue, django_capture_on_commit_callbacks, state
) -> None:
    registry = make_registry(cluster, state, attempts=2)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{registry_path(cluster)}/retry")

    assert response.status_code == 422
    assert response.json() == {
        "message": f"Only a failed registry can be retried; this one is {state}."
    }
    assert RegistryEvent.objects.count() == 0
    registry.refresh_from_db()
    assert (registry.state, registry.attempts, registry.state_changed_at) == (state, 2, T0)
    assert broker_queue.drain() == []


def test_retrying_without_a_registry_is_404(api, cluster) -> None:
    response = api.post(f"{registry_path(cluster)}/retry")

    assert response.status_code == 404
    assert response.json() == {"message": "No registry found"}
