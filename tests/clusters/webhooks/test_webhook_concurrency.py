"""The webhook under concurrency, and its end to end path, with real components.

100 copies of one delivery arriving at once (PostgreSQL, one connection per thread) give one
queue, one registry, one provisioning message, and 100 identical answers. A valid delivery ends
with a ready registry on the real registry process.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from clusters import services, webhooks
from clusters.models import Cluster, Queue, WebhookDelivery
from registries.models import Registry, State
from registries.services import registry_provision

pytestmark = pytest.mark.django_db(transaction=True)

COPIES = 100
SENDERS = 20


def delivery(secret: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "event": "cluster_queue.created",
            "organization": {"slug": "acme"},
            "cluster": {"id": str(uuid.uuid4()), "name": "Open Source"},
            "queue": {
                "id": str(uuid.uuid4()),
                "key": "linux-small",
                "hosted": True,
                "hosted_agents": {"instance_shape": {"name": "LINUX_AMD64_2X4"}},
            },
            "sender": {"id": str(uuid.uuid4()), "name": "Sam Kim"},
        }
    ).encode()
    headers = {
        "HTTP_X_BUILDKITE_EVENT": "cluster_queue.created",
        "HTTP_X_BUILDKITE_DELIVERY": delivery_id,
        "HTTP_X_BUILDKITE_SIGNATURE": webhooks.sign(secret, int(time.time()), body),
    }
    return body, headers


@pytest.mark.postgresql
def test_100_concurrent_copies_of_one_delivery_apply_it_once(broker_queue) -> None:
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = webhooks.webhook_secret_create(organization=organization, description="platform")
    body, headers = delivery(secret, "delivery-1")
    start = threading.Barrier(SENDERS)

    def send(index: int) -> tuple[int, Any]:
        if index < SENDERS:
            start.wait(timeout=10)
        try:
            response = Client().post(
                "/v2/webhooks/buildkite/acme", body, content_type="application/json", **headers
            )
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        answers = list(pool.map(send, range(COPIES)))

    assert {status for status, _ in answers} == {200}
    assert len({json.dumps(answer, sort_keys=True) for _, answer in answers}) == 1
    assert Cluster.objects.count() == Queue.objects.count() == Registry.objects.count() == 1
    assert WebhookDelivery.objects.count() == 1
    registry = Registry.objects.get()
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]


def test_a_valid_delivery_gives_a_queue_and_a_ready_registry(
    registry_settings, broker_queue
) -> None:
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = webhooks.webhook_secret_create(organization=organization, description="platform")
    body, headers = delivery(secret, "delivery-1")

    response = Client().post(
        "/v2/webhooks/buildkite/acme", body, content_type="application/json", **headers
    )

    assert response.status_code == 200, response.content
    queue = Queue.objects.get()
    payload = json.loads(body)
    assert (str(queue.pk), queue.key, queue.instance_shape) == (
        payload["queue"]["id"], "linux-small", "LINUX_AMD64_2X4",
    )  # fmt: skip
    registry = Registry.objects.get(cluster_id=payload["cluster"]["id"])
    [(task, (registry_id,))] = broker_queue.drain()
    assert (task, registry_id) == ("registries.provision", str(registry.pk))
    # What the worker does with that message, against the real registry:
    assert registry_provision(registry_id=registry_id).state == State.READY
    registry.refresh_from_db()
    assert registry.url.endswith(f"/{registry.namespace}")


@pytest.mark.postgresql
def test_concurrent_deliveries_of_queues_of_one_new_cluster_create_every_queue(
    broker_queue,
) -> None:
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = webhooks.webhook_secret_create(organization=organization, description="platform")
    cluster_id = str(uuid.uuid4())
    deliveries = []
    for index in range(8):
        body = json.dumps(
            {
                "event": "cluster_queue.created",
                "organization": {"slug": "acme"},
                "cluster": {"id": cluster_id, "name": "New to us"},
                "queue": {"id": str(uuid.uuid4()), "key": f"q{index}", "hosted": False},
                "sender": {"id": "x", "name": "Sam Kim"},
            }
        ).encode()
        deliveries.append((body, {
            "HTTP_X_BUILDKITE_EVENT": "cluster_queue.created",
            "HTTP_X_BUILDKITE_DELIVERY": f"delivery-{index}",
            "HTTP_X_BUILDKITE_SIGNATURE": webhooks.sign(secret, int(time.time()), body),
        }))  # fmt: skip
    start = threading.Barrier(len(deliveries))

    def send(delivery: tuple[bytes, dict[str, str]]) -> int:
        body, headers = delivery
        start.wait(timeout=10)
        try:
            return (
                Client()
                .post(
                    "/v2/webhooks/buildkite/acme", body, content_type="application/json", **headers
                )
                .status_code
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(deliveries)) as pool:
        statuses = list(pool.map(send, deliveries))

    assert statuses == [200] * 8
    assert Cluster.objects.get().pk == uuid.UUID(cluster_id)
    assert sorted(Queue.objects.values_list("key", flat=True)) == [f"q{i}" for i in range(8)]
