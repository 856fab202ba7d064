"""With the broker down, creating a hosted queue still succeeds and leaves the pending registry:
the durable record that provisioning is owed (docs/architecture.md, "The main flow", step 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from registries import conditions
from registries.models import Registry, RegistryEvent, State
from tests.clusters.factories import ClusterFactory
from tests.support.processes import ROOT, closed_url, database_url_for_children

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CREATE_QUEUE = """
from clusters import services
from clusters.models import Cluster
services.queue_create(
    cluster=Cluster.objects.get(pk="{cluster_id}"), key="linux", instance_shape="LINUX_AMD64_2X4"
)
print("created")
"""


def test_a_hosted_queue_is_created_and_its_registry_stays_pending_when_the_broker_is_down() -> None:
    cluster = ClusterFactory()
    closed = f"{closed_url('redis')}/0"
    started = time.monotonic()

    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CREATE_QUEUE.format(cluster_id=cluster.pk)],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DATABASE_URL": database_url_for_children(),
            "CELERY_BROKER_URL": closed,
            "REDIS_URL": "",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("created\n")
    assert time.monotonic() - started < 30  # gave up on the broker instead of hanging
    registry = Registry.objects.get(cluster=cluster)
    assert registry.state == State.PENDING
    assert cluster.queues.get().key == "linux"
    assert RegistryEvent.objects.filter(registry=registry).count() == 1
    synced = conditions.condition_get(registry, conditions.SYNCED)
    assert (synced["status"], synced["reason"]) == ("False", "EnqueueFailed")
    # Tenants read what failed; the broker's error (its address, kombu's words) is the detail.
    assert synced["message"] == (
        "The task queue did not take the message; the reconciler enqueues it again once due."
    )
    assert synced["detail"].startswith("OperationalError: ")
    # Due for the reconciler one interval after the message failed.
    interval = timedelta(seconds=settings.REGISTRY_RECONCILE_INTERVAL_SECONDS)
    assert registry.created_at + interval < registry.next_attempt_at
    assert registry.next_attempt_at <= timezone.now() + interval
    assert "registry.enqueue_failed" in result.stderr
    assert f"registry_id={registry.pk}" in result.stderr
