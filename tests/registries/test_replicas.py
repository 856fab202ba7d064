"""The replicas' side of a maintenance window, without processes (docs/retention.md#replicas): a
rolling switch (one replica at a time), a replica starting during a window, deregistration on a
clean exit, quiet replicas blocking the window (fail closed), forgetting old rows and the cap on
rows per backend."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from clusters.audit import AuditEvent
from registries.backends import backends_forget
from registries.maintenance import CollectionState, GarbageCollection, RegistryReplica
from registries.models import RegistryBackend
from registries.services import replicas as replicas_service
from registries.services.replicas import replicas_blocking, replicas_prune

pytestmark = pytest.mark.django_db

TOKEN = "replicas-notifications-token"
SERVICE = "hosted-registry"


@pytest.fixture
def backend(default_backend, settings) -> RegistryBackend:
    settings.REGISTRY_NOTIFICATIONS_TOKEN = TOKEN
    settings.REGISTRY_GC_REPLICA_POLL_SECONDS = 0.2
    settings.REGISTRY_GC_REPLICA_STALE_SECONDS = 30.0
    settings.REGISTRY_GC_SWITCH_TIMEOUT_SECONDS = 120.0
    settings.REGISTRY_GC_REPLICA_FORGET_SECONDS = 86400.0
    settings.HOT_CACHE_SECONDS = 0.0
    backends_forget()
    return default_backend


def told(client, replica: str, mode: str) -> str:
    """Report ``mode`` for ``replica``; the mode the endpoint answers."""
    response = client.get(
        "/registry/maintenance",
        {"service": SERVICE, "replica": replica, "mode": mode},
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )
    assert response.status_code == 200, response.content
    return str(response.json()["mode"])


def window(backend: RegistryBackend, state: str = CollectionState.READ_ONLY) -> GarbageCollection:
    return GarbageCollection.objects.create(backend=backend, trigger="operator", state=state)


def modes() -> dict[str, str]:
    return dict(RegistryReplica.objects.values_list("name", "mode"))


def test_the_switch_rolls_one_replica_at_a_time_both_ways(client, backend) -> None:
    assert told(client, "r1", "readwrite") == "readwrite"
    assert told(client, "r2", "readwrite") == "readwrite"
    collection = window(backend)

    # r1's turn: r2 keeps its mode (and serves pulls) until r1 reports read-only.
    assert told(client, "r2", "readwrite") == "readwrite"
    assert told(client, "r1", "readwrite") == "readonly"
    assert told(client, "r2", "readwrite") == "readwrite"  # r1 is restarting
    assert told(client, "r1", "readonly") == "readonly"
    assert told(client, "r2", "readwrite") == "readonly"  # now r2's turn
    assert told(client, "r2", "readonly") == "readonly"
    assert modes() == {"r1": "readonly", "r2": "readonly"}
    assert replicas_blocking(backend.pk, "readonly") == []

    GarbageCollection.objects.filter(pk=collection.pk).update(state=CollectionState.SUCCEEDED)
    assert told(client, "r2", "readonly") == "readonly"
    assert told(client, "r1", "readonly") == "readwrite"
    assert told(client, "r2", "readonly") == "readonly"
    assert told(client, "r1", "readwrite") == "readwrite"
    assert told(client, "r2", "readonly") == "readwrite"
    assert replicas_blocking(backend.pk, "readwrite") == ["r2"]  # until it reports


def test_a_quiet_replica_does_not_hold_the_others_past_the_switch_timeout(client, backend) -> None:
    told(client, "r1", "readwrite")
    told(client, "r2", "readwrite")
    window(backend)
    assert told(client, "r1", "readwrite") == "readonly"  # then r1 never reports again
    assert told(client, "r2", "readwrite") == "readwrite"

    RegistryReplica.objects.filter(name="r1").update(
        seen_at=timezone.now() - dt.timedelta(seconds=121)
    )
    assert told(client, "r2", "readwrite") == "readonly"
    assert told(client, "r2", "readonly") == "readonly"
    # Still not known read-only: it blocks the window, by name.
    assert replicas_blocking(backend.pk, "readonly") == ["r1"]


def test_a_replica_starting_during_a_window_starts_read_only_and_is_recorded_so(
    client, backend
) -> None:
    told(client, "r1", "readwrite")
    window(backend)

    assert told(client, "late", "starting") == "readonly"  # no turn to wait for: not running yet
    assert modes()["late"] == "readonly"
    assert told(client, "r1", "readwrite") == "readonly"


def test_a_clean_exit_deregisters_the_replica(client, backend) -> None:
    told(client, "r1", "starting")
    told(client, "r2", "readwrite")

    told(client, "r1", "stopped")
    told(client, "gone", "stopped")  # unknown: nothing to delete, nothing recorded

    assert modes() == {"r2": "readwrite"}
    changes = AuditEvent.objects.filter(type="REGISTRY_REPLICA_MODE_CHANGED").order_by(
        "occurred_at"
    )
    assert [(e.data["replica"], e.data["mode"], e.data["previous"]) for e in changes] == [
        ("r1", "readwrite", ""),
        ("r2", "readwrite", ""),
        ("r1", "stopped", "readwrite"),
    ]


def test_quiet_replicas_block_until_they_report_or_are_deleted(client, backend) -> None:
    window(backend)
    told(client, "r1", "starting")
    told(client, "quiet", "starting")
    assert replicas_blocking(backend.pk, "readonly") == []

    RegistryReplica.objects.filter(name="quiet").update(
        seen_at=timezone.now() - dt.timedelta(seconds=31)
    )
    assert replicas_blocking(backend.pk, "readonly") == ["quiet"]
    assert replicas_blocking(backend.pk, "readwrite") == ["quiet", "r1"]

    RegistryReplica.objects.filter(name="quiet").delete()  # the operator, in the console
    assert replicas_blocking(backend.pk, "readonly") == []


def test_replicas_not_seen_for_the_forget_period_are_pruned(client, backend, settings) -> None:
    told(client, "old", "readwrite")
    told(client, "recent", "readwrite")
    forget = dt.timedelta(seconds=settings.REGISTRY_GC_REPLICA_FORGET_SECONDS)
    RegistryReplica.objects.filter(name="old").update(
        seen_at=timezone.now() - forget - dt.timedelta(seconds=1)
    )
    RegistryReplica.objects.filter(name="recent").update(
        seen_at=timezone.now() - forget + dt.timedelta(seconds=60)
    )

    assert replicas_prune() == 1
    assert replicas_prune() == 0

    assert list(modes()) == ["recent"]
    pruned = AuditEvent.objects.get(type="REGISTRY_REPLICAS_PRUNED")
    assert (pruned.subject_name, pruned.data["replicas"]) == ("default", ["old"])


def test_a_new_replica_beyond_the_cap_is_refused_and_recorded_nowhere(
    client, backend, monkeypatch
) -> None:
    monkeypatch.setattr(replicas_service, "MAX_REPLICAS_PER_BACKEND", 2)
    told(client, "r1", "readwrite")
    told(client, "r2", "readwrite")

    refused = client.get(
        "/registry/maintenance",
        {"service": SERVICE, "replica": "r3", "mode": "readwrite"},
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )

    assert refused.status_code == 409
    assert refused.json() == {
        "message": "Backend default already has 2 replicas, the most it keeps: give each "
        "replica a stable name (--name), and delete the rows of replicas gone for good in the "
        "console (or wait REGISTRY_GC_REPLICA_FORGET_SECONDS)."
    }
    assert sorted(modes()) == ["r1", "r2"]
    assert told(client, "r2", "readwrite") == "readwrite"  # known ones still report
    assert AuditEvent.objects.filter(type="REGISTRY_REPLICA_MODE_CHANGED").count() == 2


def test_an_operator_deletes_a_replica_gone_for_good_in_the_console(
    client, backend, operator
) -> None:
    window(backend)
    told(client, "gone", "starting")
    told(client, "alive", "starting")
    gone = RegistryReplica.objects.get(name="gone")
    RegistryReplica.objects.filter(pk=gone.pk).update(
        seen_at=timezone.now() - dt.timedelta(seconds=300)
    )
    assert replicas_blocking(backend.pk, "readonly") == ["gone"]
    page = f"/admin/registries/registryreplica/{gone.pk}/delete/"

    assert operator.get(page).status_code == 200
    response = operator.post(page, {"post": "yes"})

    assert response.status_code == 302
    assert replicas_blocking(backend.pk, "readonly") == []
    assert list(modes()) == ["alive"]
    deleted = AuditEvent.objects.get(type="REGISTRY_REPLICA_DELETED")
    assert (deleted.subject_name, deleted.data["replica"], deleted.data["mode"]) == (
        "default",
        "gone",
        "readonly",
    )
    assert deleted.actor_type == "USER"
