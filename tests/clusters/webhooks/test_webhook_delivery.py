"""A verified delivery to the platform's webhook is applied once, through the same services
as the API: creations, idempotency, deletions, and never to another organization's rows.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from clusters import services, webhooks
from clusters.models import Cluster, Queue, WebhookDelivery
from registries.models import Registry, State
from registries.services import registry_provision
from tests.clusters.webhooks.helpers import (
    CLUSTER_ID,
    CREATED,
    DELETED,
    QUEUE_ID,
    Platform,
    answer,
    counts,
    deliver,
    payload,
)

pytestmark = pytest.mark.django_db


# --- a valid delivery ---------------------------------------------------------------------------


def test_a_signed_queue_creation_for_an_unknown_cluster_creates_both_with_the_payloads_ids(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue
) -> None:
    body = payload()

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(body, secret=platform.secret)

    assert response.status_code == 200
    assert response.json() == answer(
        "delivery-1", CREATED, "Created cluster 'Open Source' and queue 'linux-small'."
    )
    assert response["X-Delivery-Repeated"] == "false"
    cluster = Cluster.objects.get()
    assert (str(cluster.pk), cluster.organization, cluster.name, cluster.description) == (
        CLUSTER_ID, platform.organization, "Open Source", "Open source builds",
    )  # fmt: skip
    queue = Queue.objects.get()
    assert (str(queue.pk), queue.cluster, queue.key, queue.instance_shape, queue.description) == (
        QUEUE_ID, cluster, "linux-small", "LINUX_AMD64_2X4", "Hosted Linux",
    )  # fmt: skip
    registry = Registry.objects.get()
    assert (registry.cluster, registry.state) == (cluster, State.PENDING)
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]
    delivery = WebhookDelivery.objects.get()
    assert (
        delivery.organization, delivery.delivery_id, delivery.event, delivery.verified_by,
        delivery.secret, delivery.payload, delivery.response, delivery.replayed_at,
    ) == (
        platform.organization, "delivery-1", CREATED, "signature", platform.row, body,
        response.json(), None,
    )  # fmt: skip
    assert delivery.duration.total_seconds() >= 0


def test_a_self_hosted_queue_creation_owes_no_registry(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(payload(key="on-prem", shape=None), secret=platform.secret)

    assert response.status_code == 200
    assert response.json()["message"] == "Created cluster 'Open Source' and queue 'on-prem'."
    assert Queue.objects.get().instance_shape == ""
    assert Registry.objects.count() == 0
    assert broker_queue.drain() == []


def test_the_token_mode_is_accepted_too(platform: Platform) -> None:
    response = deliver(payload(), token=platform.secret)

    assert response.status_code == 200
    assert response.json() == answer(
        "delivery-1", CREATED, "Created cluster 'Open Source' and queue 'linux-small'."
    )
    delivery = WebhookDelivery.objects.get()
    assert (delivery.verified_by, delivery.secret) == ("token", platform.row)
    assert str(Queue.objects.get().pk) == QUEUE_ID


def test_a_queue_created_in_a_known_cluster_keeps_the_cluster(platform: Platform) -> None:
    cluster = services.cluster_create(
        organization=platform.organization, name="Renamed here", cluster_id=uuid.UUID(CLUSTER_ID)
    )

    response = deliver(payload(), secret=platform.secret)

    assert response.status_code == 200
    assert response.json()["message"] == "Created queue 'linux-small'."
    cluster.refresh_from_db()
    assert cluster.name == "Renamed here"
    assert Queue.objects.get().cluster == cluster


# --- idempotency --------------------------------------------------------------------------------


def test_a_repeated_delivery_gets_the_original_answer_and_applies_nothing_again(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue
) -> None:
    body = payload()
    with django_capture_on_commit_callbacks(execute=True):
        first = deliver(body, secret=platform.secret)
        repeated = deliver(body, secret=platform.secret)

    assert first.status_code == repeated.status_code == 200
    assert repeated.json() == first.json()
    assert (first["X-Delivery-Repeated"], repeated["X-Delivery-Repeated"]) == ("false", "true")
    assert counts() == {"Cluster": 1, "Queue": 1, "Registry": 1, "WebhookDelivery": 1}
    assert broker_queue.drain() == [("registries.provision", (str(Registry.objects.get().pk),))]

    # An id names one delivery: another body under it is refused, and nothing is applied.
    with django_capture_on_commit_callbacks(execute=True):
        changed = deliver(payload(queue_id=str(uuid.uuid4()), key="other"), token=platform.secret)
    reused = (
        "'delivery-1' was already used for a different delivery; each delivery needs its own id"
    )
    assert changed.status_code == 422
    assert changed.json() == {
        "message": f"Validation failed: X-Buildkite-Delivery {reused}",
        "errors": [{"field": "X-Buildkite-Delivery", "message": f"{reused}."}],
    }
    assert counts() == {"Cluster": 1, "Queue": 1, "Registry": 1, "WebhookDelivery": 1}
    assert broker_queue.drain() == []

    # Another id with the same content, dispatched (signed) at another time, is a new delivery,
    # which finds the queue there.
    with django_capture_on_commit_callbacks(execute=True):
        again = deliver(
            body, secret=platform.secret, delivery="delivery-2", timestamp=int(time.time()) - 10
        )
    assert again.status_code == 200
    assert again.json() == answer("delivery-2", CREATED, "The queue already existed.")
    assert again["X-Delivery-Repeated"] == "false"
    assert counts() == {"Cluster": 1, "Queue": 1, "Registry": 1, "WebhookDelivery": 2}
    assert broker_queue.drain() == []


# --- deletions ----------------------------------------------------------------------------------


def test_a_queue_deletion_deletes_the_queue_and_a_second_one_finds_it_gone(
    platform: Platform,
) -> None:
    assert deliver(payload(), secret=platform.secret, delivery="create").status_code == 200
    body = payload(DELETED)

    response = deliver(body, secret=platform.secret, delivery="delete")

    assert response.status_code == 200
    assert response.json() == answer("delete", DELETED, "Deleted queue 'linux-small'.")
    assert Queue.objects.count() == 0
    assert str(Cluster.objects.get().pk) == CLUSTER_ID
    assert Registry.objects.get().cluster_id == uuid.UUID(CLUSTER_ID)  # images are the cluster's

    again = deliver(
        body, secret=platform.secret, delivery="delete-again", timestamp=int(time.time()) - 10
    )
    assert again.status_code == 200
    assert again.json() == answer("delete-again", DELETED, "The queue was already gone.")
    assert WebhookDelivery.objects.count() == 3


def test_a_cluster_deletion_deletes_the_cluster_and_deprovisions_its_registry(
    platform: Platform, registry_settings, django_capture_on_commit_callbacks, broker_queue
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(payload(), secret=platform.secret, delivery="create").status_code == 200
    registry = Registry.objects.get()
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]
    assert registry_provision(registry_id=registry.pk).state == State.READY  # as the worker does
    broker_queue.drain()
    body = payload("cluster.deleted", queue=False)

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(body, secret=platform.secret, delivery="delete")

    assert response.status_code == 200
    assert response.json() == answer(
        "delete", "cluster.deleted",
        "Deleted cluster 'Open Source'; its registry is being deprovisioned.", queue_id=None,
    )  # fmt: skip
    assert (Cluster.objects.count(), Queue.objects.count()) == (0, 0)
    registry.refresh_from_db()
    assert (registry.state, registry.cluster_id) == (State.DEPROVISIONING, None)
    assert broker_queue.drain() == [("registries.deprovision", (str(registry.pk),))]

    with django_capture_on_commit_callbacks(execute=True):
        again = deliver(
            body, secret=platform.secret, delivery="delete-again", timestamp=int(time.time()) - 10
        )
    assert again.status_code == 200
    assert again.json() == answer(
        "delete-again", "cluster.deleted", "The cluster was already gone.", queue_id=None
    )
    assert broker_queue.drain() == []


# --- other organizations ------------------------------------------------------------------------


def test_a_cluster_id_of_another_organization_is_answered_as_an_unknown_id_and_left_as_it_is(
    platform: Platform, django_capture_on_commit_callbacks, broker_queue
) -> None:
    globex = services.organization_create(slug="globex", name="Globex")
    theirs = services.cluster_create(
        organization=globex,
        name="Theirs",
        description="Not yours",
        cluster_id=uuid.UUID(CLUSTER_ID),
    )
    before = counts()

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(payload(), secret=platform.secret)

    # What an id nobody holds gets (test_a_signed_queue_creation_for_an_unknown_cluster_...).
    assert response.status_code == 200
    assert response.json() == answer(
        "delivery-1", CREATED, "Created cluster 'Open Source' and queue 'linux-small'."
    )
    assert counts() == {**before, "WebhookDelivery": before["WebhookDelivery"] + 1}
    assert broker_queue.drain() == []
    theirs.refresh_from_db()
    assert (theirs.organization, theirs.name, theirs.description) == (globex, "Theirs", "Not yours")
    assert not theirs.queues.exists()


def test_a_queue_id_of_another_organization_is_answered_as_an_unknown_id_and_left_as_it_is(
    platform: Platform,
) -> None:
    globex = services.organization_create(slug="globex", name="Globex")
    theirs = services.cluster_create(organization=globex, name="Theirs")
    their_queue = services.queue_create(cluster=theirs, key="theirs", queue_id=uuid.UUID(QUEUE_ID))
    before = counts()

    response = deliver(payload(), secret=platform.secret)

    assert response.status_code == 200
    assert response.json() == answer(
        "delivery-1", CREATED, "Created cluster 'Open Source' and queue 'linux-small'."
    )
    assert counts() == {**before, "WebhookDelivery": before["WebhookDelivery"] + 1}
    their_queue.refresh_from_db()
    assert (their_queue.cluster, their_queue.key) == (theirs, "theirs")


def test_deletions_never_reach_another_organizations_cluster(platform: Platform) -> None:
    globex = services.organization_create(slug="globex", name="Globex")
    theirs = services.cluster_create(
        organization=globex, name="Theirs", cluster_id=uuid.UUID(CLUSTER_ID)
    )
    services.queue_create(cluster=theirs, key="linux-small", queue_id=uuid.UUID(QUEUE_ID))

    queue_gone = deliver(payload("cluster_queue.deleted"), secret=platform.secret, delivery="q")
    cluster_gone = deliver(
        payload("cluster.deleted", queue=False), secret=platform.secret, delivery="c"
    )

    assert queue_gone.json()["message"] == "The queue was already gone."
    assert cluster_gone.json()["message"] == "The cluster was already gone."
    assert Queue.objects.filter(cluster=theirs).count() == 1


# --- found in review -----------------------------------------------------------------------------


def test_a_signed_delivery_resent_under_a_new_id_is_a_repeat_not_applied_again(
    platform: Platform,
) -> None:
    body = json.dumps(payload()).encode()
    signature = webhooks.sign(platform.secret, int(time.time()), body)
    first = deliver(body, signature=signature, event=CREATED, delivery="d-1")
    services.queue_delete(queue=Queue.objects.get())

    replayed = deliver(body, signature=signature, event=CREATED, delivery="attacker-1")

    assert replayed.status_code == 200
    assert replayed.json() == first.json()
    assert replayed["X-Delivery-Repeated"] == "true"
    assert not Queue.objects.exists()  # what was deleted stays deleted


def test_a_number_too_large_for_a_float_is_400(platform: Platform) -> None:
    body = json.dumps(payload()).encode().replace(b'"sender": {', b'"sender": {"x": 1e400, ')
    before = counts()

    response = deliver(body, secret=platform.secret, event=CREATED)

    assert response.status_code == 400
    assert response.json() == {"message": "The body is not JSON: 1e400 is too large for a number."}
    assert counts() == before


@pytest.mark.parametrize("odd_id", [1, True, False])
def test_an_id_that_is_not_a_string_is_422(platform: Platform, odd_id: object) -> None:
    body = payload()
    body["cluster"]["id"] = odd_id
    before = counts()

    response = deliver(body, secret=platform.secret)

    assert response.status_code == 422
    assert counts() == before


def test_a_cluster_created_again_with_its_old_id_gets_a_new_namespace(platform: Platform) -> None:
    deliver(payload(), secret=platform.secret, delivery="d-1")
    first = Registry.objects.get(cluster_id=CLUSTER_ID)
    deliver(payload("cluster.deleted", queue=False), secret=platform.secret, delivery="d-2")

    again = deliver(
        payload(), secret=platform.secret, delivery="d-3", timestamp=int(time.time()) - 10
    )

    assert again.status_code == 200, again.content
    second = Registry.objects.get(cluster_id=CLUSTER_ID)
    assert second.pk != first.pk
    assert second.namespace != first.namespace
