"""Celery beat's re-drive: registries owed provisioning that nobody moves get a new message."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from registries.models import Registry, State
from registries.tasks import redrive_stalled_registries
from tests.clusters.factories import ClusterFactory

pytestmark = pytest.mark.django_db


def registry(state: str, idle: timedelta) -> Registry:
    cluster = ClusterFactory()
    return Registry.objects.create(
        cluster=cluster,
        namespace=f"org/{cluster.pk.hex[:12]}",
        driver="distribution",
        state=state,
        url="x" if state == State.READY else "",
        state_changed_at=timezone.now() - idle,
    )


def test_only_stalled_pending_and_provisioning_registries_are_redriven(
    settings, broker_queue
) -> None:
    settings.REGISTRY_STALLED_AFTER_SECONDS = 300
    long_ago = timedelta(minutes=10)
    stalled = [registry(State.PENDING, long_ago), registry(State.PROVISIONING, long_ago)]
    registry(State.PENDING, timedelta(seconds=30))  # its message may still be on its way
    registry(State.READY, long_ago)
    registry(State.FAILED, long_ago)  # waits for an operator

    result = redrive_stalled_registries.apply().get()

    expected = [str(r.pk) for r in stalled]
    assert result == expected
    # The broker does not promise an order between messages sent in the same instant.
    assert sorted(broker_queue.drain()) == [
        ("registries.provision", (pk,)) for pk in sorted(expected)
    ]
