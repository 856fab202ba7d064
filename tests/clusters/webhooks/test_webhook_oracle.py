"""A signed delivery that names another organization's cluster or queue id gets exactly the
answer an id nobody holds gets (status, body apart from the ids the caller sent, the repeat
header), refusals included, and changes nothing of either organization: the webhook is no
existence oracle for other organizations' ids."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import requests

from clusters import services, webhooks
from clusters.models import Cluster, Organization, Queue
from registries.models import Registry
from tests.clusters.webhooks.helpers import CREATED, DELETED, Platform, counts, deliver, payload

pytestmark = pytest.mark.django_db


def globex_ids() -> tuple[str, str]:
    """Another organization's cluster and hosted queue (with its registry): their ids."""
    globex = services.organization_create(slug="globex", name="Globex")
    cluster = services.cluster_create(organization=globex, name="Theirs")
    queue = services.queue_create(cluster=cluster, key="theirs", instance_shape="LINUX_AMD64_2X4")
    return str(cluster.pk), str(queue.pk)


def globex_state() -> list[Any]:
    return [
        list(Cluster.objects.filter(organization__slug="globex").values()),
        list(Queue.objects.filter(cluster__organization__slug="globex").values()),
        list(Registry.objects.values("pk", "cluster_id", "state", "namespace")),
    ]


def masked(body: dict[str, Any], *sent: str) -> dict[str, Any]:
    """``body`` with the ids the caller sent replaced by placeholders."""
    text = json.dumps(body)
    for number, value in enumerate(sent):
        text = text.replace(value, f"<sent {number}>")
    return dict(json.loads(text))


#: Each case: the event, and which of its ids are another organization's ("cluster", "queue"),
#: with what acme has first ("own cluster": acme's cluster "Open Source" under the payload's id
#: when the cluster id is not the foreign one; "name taken": acme has another cluster named
#: "Open Source", so creating one is refused).
CASES = [
    pytest.param(CREATED, {"cluster"}, set(), id="created, their cluster id"),
    pytest.param(CREATED, {"queue"}, set(), id="created, their queue id, new cluster"),
    pytest.param(CREATED, {"queue"}, {"own cluster"}, id="created, their queue id, own cluster"),
    pytest.param(CREATED, {"cluster", "queue"}, set(), id="created, both their ids"),
    pytest.param(CREATED, {"cluster"}, {"name taken"}, id="created, their cluster id, refused"),
    pytest.param(DELETED, {"queue"}, {"own cluster"}, id="queue deleted, their queue id"),
    pytest.param(DELETED, {"cluster", "queue"}, set(), id="queue deleted, their ids"),
    pytest.param("cluster.deleted", {"cluster"}, set(), id="cluster deleted, their cluster id"),
]


@pytest.mark.parametrize(("event", "foreign", "acme_has"), CASES)
def test_another_organizations_ids_get_the_answer_of_unknown_ids_and_nothing_changes(
    platform: Platform,
    django_capture_on_commit_callbacks,
    broker_queue,
    event: str,
    foreign: set[str],
    acme_has: set[str],
) -> None:
    their_cluster, their_queue = globex_ids()
    own_cluster = str(uuid.uuid4())
    if "own cluster" in acme_has:
        services.cluster_create(
            organization=platform.organization,
            name="Open Source",
            cluster_id=uuid.UUID(own_cluster),
        )
    if "name taken" in acme_has:
        services.cluster_create(organization=platform.organization, name="Open Source")

    def ids(theirs: bool) -> dict[str, str]:
        """The payload's ids: globex's where ``theirs`` (for the foreign ones), fresh otherwise."""
        fresh_cluster = own_cluster if "own cluster" in acme_has else str(uuid.uuid4())
        return {
            "cluster_id": their_cluster if theirs and "cluster" in foreign else fresh_cluster,
            "queue_id": their_queue if theirs and "queue" in foreign else str(uuid.uuid4()),
        }

    def send(theirs: bool, delivery: str) -> tuple[int, dict[str, Any], str | None]:
        sent = ids(theirs)
        body = payload(event, **sent, queue=event != "cluster.deleted")
        with django_capture_on_commit_callbacks(execute=True):
            response = deliver(body, secret=platform.secret, delivery=delivery)
            again = deliver(body, secret=platform.secret, delivery=delivery)
        assert (again.status_code, again.json()) == (response.status_code, response.json())
        repeated = again.get("X-Delivery-Repeated")
        return response.status_code, masked(response.json(), *sent.values(), delivery), repeated

    before, theirs_before = counts(), globex_state()
    answered_for_theirs = send(True, "d-theirs")
    written = counts()
    assert globex_state() == theirs_before
    assert broker_queue.drain() == []
    answered_for_unknown = send(False, "d-unknown")

    assert answered_for_theirs == answered_for_unknown
    # Only the delivery's own record, as for any delivery that is answered 200.
    recorded = 1 if answered_for_theirs[0] == 200 else 0
    assert written == {**before, "WebhookDelivery": before["WebhookDelivery"] + recorded}


# --- over HTTP -----------------------------------------------------------------------------------


def _post(url: str, secret: str, body: dict[str, Any], delivery: str) -> requests.Response:
    raw = json.dumps(body).encode()
    return requests.post(
        url,
        data=raw,
        headers={
            "Content-Type": "application/json",
            webhooks.SIGNATURE_HEADER: webhooks.sign(secret, int(time.time()), raw),
            webhooks.EVENT_HEADER: body["event"],
            webhooks.DELIVERY_HEADER: delivery,
        },
        timeout=10,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("foreign", ["cluster", "queue"])
def test_over_http_another_organizations_id_gets_the_answer_of_an_unknown_id(
    live_server, foreign: str
) -> None:
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = webhooks.webhook_secret_create(organization=organization, description="platform")
    their_cluster, their_queue = globex_ids()
    url = f"{live_server.url}/v2/webhooks/buildkite/acme"

    def fresh() -> str:
        return str(uuid.uuid4())

    theirs = {"cluster_id": their_cluster if foreign == "cluster" else fresh(),
              "queue_id": their_queue if foreign == "queue" else fresh()}  # fmt: skip
    unknown = {"cluster_id": fresh(), "queue_id": fresh()}
    before = (Cluster.objects.count(), Queue.objects.count(), Registry.objects.count())

    for_theirs = _post(url, secret, payload(CREATED, **theirs), "d-theirs")
    after = (Cluster.objects.count(), Queue.objects.count(), Registry.objects.count())
    for_unknown = _post(url, secret, payload(CREATED, **unknown), "d-unknown")

    assert for_theirs.status_code == for_unknown.status_code == 200
    assert masked(for_theirs.json(), *theirs.values(), "d-theirs") == masked(
        for_unknown.json(), *unknown.values(), "d-unknown"
    )
    assert for_theirs.headers["X-Delivery-Repeated"] == "false"
    assert after == before
    assert Organization.objects.get(slug="globex").clusters.get().name == "Theirs"
