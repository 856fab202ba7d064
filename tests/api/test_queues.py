"""``/v2/organizations/{org}/clusters/{cluster}/queues``: Buildkite's shapes, status codes and
errors, pausing and resuming dispatch, and the environment of a job on a queue."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from clusters import services
from clusters.models import Cluster, Queue
from registries.models import Registry, State
from tests.api.expected import TIMESTAMP, user_body
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

REGISTRY_URL = "127.0.0.1:5000/acme/0123456789ab"
SHAPES = ", ".join(
    [
        *(f"LINUX_{arch}_{size}" for arch in ("AMD64", "ARM64")
          for size in ("2X4", "4X16", "8X32", "16X64", "32X128", "64X256")),
        "MACOS_ARM64_M4_6X28",
        "MACOS_ARM64_M4_12X56",
    ]
)  # fmt: skip


def queues_path(cluster: Cluster) -> str:
    return f"/clusters/{cluster.pk}/queues"


def queue_path(queue: Queue, action: str = "") -> str:
    return f"/clusters/{queue.cluster_id}/queues/{queue.pk}{action}"


def snapshot(queue: Queue) -> dict[str, Any]:
    """Every stored field of ``queue``, to show that a refused request changed nothing."""
    return Queue.objects.filter(pk=queue.pk).values().get()


# --- create -------------------------------------------------------------------------------------


def test_creating_a_self_hosted_queue_answers_201_with_buildkites_shape(api, cluster) -> None:
    response = api.post(
        queues_path(cluster),
        {"key": "default", "description": "Self-hosted agents",
         "retry_agent_affinity": "prefer-different"},
    )  # fmt: skip

    assert response.status_code == 201
    body = response.json()
    queue = Queue.objects.get()
    cluster_url = f"http://testserver/v2/organizations/acme/clusters/{cluster.pk}"
    assert body == {
        "id": str(queue.pk),
        "graphql_id": base64.b64encode(f"ClusterQueue---{queue.pk}".encode()).decode(),
        "key": "default",
        "description": "Self-hosted agents",
        "url": f"{cluster_url}/queues/{queue.pk}",
        "web_url": f"http://testserver/admin/clusters/queue/{queue.pk}/change/",
        "cluster_url": cluster_url,
        "retry_agent_affinity": "prefer-different",
        "dispatch_paused": False,
        "dispatch_paused_by": None,
        "dispatch_paused_at": None,
        "dispatch_paused_note": None,
        "created_at": body["created_at"],
        "created_by": user_body(api, body["created_by"]),
        "hosted": False,
    }
    assert list(body) == [  # Buildkite's order
        "id", "graphql_id", "key", "description", "url", "web_url", "cluster_url",
        "retry_agent_affinity", "dispatch_paused", "dispatch_paused_by", "dispatch_paused_at",
        "dispatch_paused_note", "created_at", "created_by", "hosted",
    ]  # fmt: skip
    assert TIMESTAMP.fullmatch(body["created_at"])
    assert (queue.cluster, queue.instance_shape, queue.created_by) == (cluster, "", api.token.user)
    assert not Registry.objects.exists()


def test_a_self_hosted_queue_defaults_to_prefer_warmest_and_no_description(api, cluster) -> None:
    body = api.post(queues_path(cluster), {"key": "default", "description": None}).json()

    assert (body["retry_agent_affinity"], body["description"]) == ("prefer-warmest", None)


def test_creating_a_hosted_queue_answers_201_with_hosted_agents(api, cluster) -> None:
    response = api.post(
        queues_path(cluster),
        {"key": "linux-small", "description": "Queue of hosted Buildkite agents",
         "hostedAgents": {"instanceShape": "LINUX_AMD64_2X4",
                          "agentImageRef": "ignored/at:creation"}},
    )  # fmt: skip

    assert response.status_code == 201
    body = response.json()
    queue = Queue.objects.get()
    cluster_url = f"http://testserver/v2/organizations/acme/clusters/{cluster.pk}"
    assert body == {
        "id": str(queue.pk),
        "graphql_id": base64.b64encode(f"ClusterQueue---{queue.pk}".encode()).decode(),
        "key": "linux-small",
        "description": "Queue of hosted Buildkite agents",
        "url": f"{cluster_url}/queues/{queue.pk}",
        "web_url": f"http://testserver/admin/clusters/queue/{queue.pk}/change/",
        "cluster_url": cluster_url,
        "dispatch_paused": False,
        "dispatch_paused_by": None,
        "dispatch_paused_at": None,
        "dispatch_paused_note": None,
        "created_at": body["created_at"],
        "created_by": user_body(api, body["created_by"]),
        "hosted": True,
        "hosted_agents": {
            "instance_shape": {
                "machine_type": "linux",
                "architecture": "amd64",
                "cpu": 2,
                "memory": 4,
                "name": "LINUX_AMD64_2X4",
            },
            "platform_settings": {"linux": {"agent_image_ref": None}},
        },
    }
    assert (queue.instance_shape, queue.agent_image_ref) == ("LINUX_AMD64_2X4", "")


def test_a_hosted_queue_may_be_created_with_snake_case_keys(api, cluster) -> None:
    response = api.post(
        queues_path(cluster),
        {"key": "arm", "hosted_agents": {"instance_shape": "LINUX_ARM64_4X16"}},
    )

    assert response.status_code == 201
    assert response.json()["hosted_agents"]["instance_shape"] == {
        "machine_type": "linux", "architecture": "arm64", "cpu": 4, "memory": 16,
        "name": "LINUX_ARM64_4X16",
    }  # fmt: skip
    assert Queue.objects.get().instance_shape == "LINUX_ARM64_4X16"


def test_a_hosted_macos_queue_has_no_platform_settings(api, cluster) -> None:
    response = api.post(
        queues_path(cluster),
        {"key": "mac", "hostedAgents": {"instanceShape": "MACOS_ARM64_M4_6X28"}},
    )

    assert response.status_code == 201
    assert response.json()["hosted_agents"] == {
        "instance_shape": {
            "machine_type": "macos", "architecture": "arm64", "cpu": 6, "memory": 28,
            "name": "MACOS_ARM64_M4_6X28",
        },
        "platform_settings": {},
    }  # fmt: skip


def test_the_first_hosted_queue_creates_a_pending_registry_and_enqueues_its_provisioning(
    api, cluster, broker_queue, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        self_hosted = api.post(queues_path(cluster), {"key": "default"})
    assert self_hosted.status_code == 201
    assert not Registry.objects.exists()
    assert broker_queue.drain() == []

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            queues_path(cluster),
            {"key": "linux", "hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"}},
        )

    assert response.status_code == 201
    registry = Registry.objects.get()
    assert (registry.cluster, registry.state) == (cluster, State.PENDING)
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]

    with django_capture_on_commit_callbacks(execute=True):
        second = api.post(
            queues_path(cluster),
            {"key": "mac", "hostedAgents": {"instanceShape": "MACOS_ARM64_M4_6X28"}},
        )
    assert second.status_code == 201
    assert Registry.objects.count() == 1
    assert broker_queue.drain() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Validation failed: key this field is required"),
        ({"key": ""}, "Validation failed: key this field may not be blank"),
        ({"key": "has space"}, "Validation failed: key use only letters, digits, hyphens (-) and "
         "underscores (_)"),
        ({"key": "x" * 101}, "Validation failed: key ensure this field has no more than 100 "
         "characters"),
        ({"key": "q", "retry_agent_affinity": "nearest"}, "Validation failed: "
         'retry_agent_affinity "nearest" is not a valid choice'),
        ({"key": "q", "hostedAgents": {}}, "Validation failed: hostedAgents.instanceShape this "
         "field is required"),
        ({"key": "q", "hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"},
          "hosted_agents": {"instance_shape": "LINUX_AMD64_2X4"}},
         "Validation failed: Send hostedAgents or hosted_agents, not both"),
        ({"key": "q", "hostedAgents": {"instanceShape": "LINUX_AMD64_1X1"}},
         f"Validation failed: instance_shape 'LINUX_AMD64_1X1' is not a known instance shape; "
         f"use one of {SHAPES}"),
    ],
)  # fmt: skip
def test_an_invalid_queue_is_422_and_writes_nothing(api, cluster, body, message) -> None:
    response = api.post(queues_path(cluster), body)

    assert response.status_code == 422
    assert response.json()["message"] == message
    assert not Queue.objects.exists()
    assert not Registry.objects.exists()


def test_hosted_agents_that_are_not_an_object_are_422(api, cluster) -> None:
    response = api.post(queues_path(cluster), {"key": "q", "hostedAgents": "LINUX_AMD64_2X4"})

    assert response.status_code == 422
    assert response.json()["message"] == (
        "Validation failed: hostedAgents invalid data. Expected a dictionary, but got str"
    )
    assert not Queue.objects.exists()


def test_a_duplicate_key_in_the_cluster_is_422_but_another_cluster_may_reuse_it(
    api, cluster
) -> None:
    other = services.cluster_create(organization=api.organization, name="Other")
    assert api.post(queues_path(cluster), {"key": "default"}).status_code == 201

    duplicate = api.post(queues_path(cluster), {"key": "default"})
    elsewhere = api.post(queues_path(other), {"key": "default"})

    assert duplicate.status_code == 422
    assert duplicate.json() == {
        "message": "Validation failed: key a queue with key 'default' already exists in this "
        "cluster",
        "errors": [
            {
                "field": "key",
                "message": "A queue with key 'default' already exists in this cluster.",
            }
        ],
    }
    assert elsewhere.status_code == 201
    assert Queue.objects.count() == 2


# --- list and read ------------------------------------------------------------------------------


def test_the_list_holds_the_clusters_queues_by_key_paginated(api, cluster) -> None:
    other = services.cluster_create(organization=api.organization, name="Other")
    services.queue_create(cluster=other, key="elsewhere")
    for key in ("b", "c", "a"):
        services.queue_create(cluster=cluster, key=key)

    first = api.get(queues_path(cluster), per_page=2)
    second = api.get(queues_path(cluster), per_page=2, page=2)

    url = f"http://testserver/v2/organizations/acme/clusters/{cluster.pk}/queues"
    assert first.status_code == 200
    assert [q["key"] for q in first.json()] == ["a", "b"]
    assert first["Link"] == (
        f'<{url}?page=2&per_page=2>; rel="next", <{url}?page=2&per_page=2>; rel="last"'
    )
    assert [q["key"] for q in second.json()] == ["c"]
    assert api.get(queues_path(other)).json()[0]["key"] == "elsewhere"


def test_the_list_shows_each_queue_as_its_detail_does(api, cluster) -> None:
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    queue = services.queue_create(cluster=cluster, key="default", created_by=api.token.user)
    services.queue_pause_dispatch(queue=queue, user=api.token.user, note="Investigating")

    listed = api.get(queues_path(cluster)).json()

    assert listed == [api.get(queue_path(q)).json() for q in Queue.objects.order_by("key")]


def test_a_cluster_without_queues_lists_none(api, cluster) -> None:
    response = api.get(queues_path(cluster))
    assert (response.status_code, response.json()) == (200, [])


def test_listing_1_or_50_queues_takes_the_same_number_of_queries(api, cluster) -> None:
    def queries() -> int:
        # The token (with its user and organization), then the page with its total, filtered by
        # the cluster and the organization (the cluster is looked up only for an empty list).
        with expected_queries("api:queues") as captured:
            assert api.get(queues_path(cluster), per_page=100).status_code == 200
        return len(captured)

    def add(key: str, **kwargs: Any) -> None:
        queue = services.queue_create(cluster=cluster, key=key, created_by=api.token.user, **kwargs)
        services.queue_pause_dispatch(queue=queue, user=api.token.user, note="n")

    add("one", instance_shape="LINUX_AMD64_2X4")
    one = queries()
    for index in range(49):
        add(f"q{index}", instance_shape="LINUX_AMD64_2X4" if index % 2 else "")
    assert queries() == one


def test_reading_a_queue_takes_a_fixed_number_of_queries(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="default", created_by=api.token.user)
    services.queue_pause_dispatch(queue=queue, user=api.token.user, note="n")

    # The token (with its user and organization), the cluster, the queue (with its users).
    with expected_queries("api:queue"):
        assert api.get(queue_path(queue)).status_code == 200


def test_a_paused_queue_shows_who_paused_it_when_and_why(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="default")
    services.queue_pause_dispatch(
        queue=queue, user=api.token.user, note="Paused while we investigate a security issue"
    )

    body = api.get(queue_path(queue)).json()

    assert body["dispatch_paused"] is True
    assert body["dispatch_paused_by"] == user_body(api, body["dispatch_paused_by"])
    assert TIMESTAMP.fullmatch(body["dispatch_paused_at"])
    assert body["dispatch_paused_note"] == "Paused while we investigate a security issue"
    assert body["created_by"] is None  # created without a user (by the admin's shell, say)


# --- update -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_both_change_only_what_is_sent(api, cluster, method) -> None:
    queue = services.queue_create(
        cluster=cluster,
        key="default",
        description="Before",
        retry_agent_affinity="prefer-different",
    )

    response = getattr(api, method)(queue_path(queue), {"description": "After"})

    assert response.status_code == 200
    body = response.json()
    assert (body["key"], body["description"], body["retry_agent_affinity"]) == (
        "default", "After", "prefer-different"
    )  # fmt: skip
    assert body == api.get(queue_path(queue)).json()
    assert getattr(api, method)(queue_path(queue), {}).json() == body


def test_the_retry_affinity_and_description_can_be_changed_and_cleared(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="default", description="Before")

    body = api.patch(
        queue_path(queue), {"description": None, "retry_agent_affinity": "prefer-different"}
    ).json()

    assert (body["description"], body["retry_agent_affinity"]) == (None, "prefer-different")
    queue.refresh_from_db()
    assert (queue.description, queue.retry_agent_affinity) == ("", "prefer-different")


def test_a_hosted_queue_can_be_resized_and_given_an_agent_image(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    image = "us-docker.pkg.dev/acme/agents/custom:1.2"

    response = api.patch(
        queue_path(queue),
        {"hostedAgents": {"instanceShape": "LINUX_AMD64_8X32", "agentImageRef": image}},
    )

    assert response.status_code == 200
    assert response.json()["hosted_agents"] == {
        "instance_shape": {
            "machine_type": "linux", "architecture": "amd64", "cpu": 8, "memory": 32,
            "name": "LINUX_AMD64_8X32",
        },
        "platform_settings": {"linux": {"agent_image_ref": image}},
    }  # fmt: skip
    queue.refresh_from_db()
    assert (queue.instance_shape, queue.agent_image_ref) == ("LINUX_AMD64_8X32", image)


def test_snake_case_updates_and_a_null_image_restores_the_default(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    services.queue_update(queue=queue, agent_image_ref="custom:1")

    response = api.put(
        queue_path(queue),
        {"hosted_agents": {"instance_shape": "LINUX_AMD64_4X16", "agent_image_ref": None}},
    )

    assert response.status_code == 200
    hosted_agents = response.json()["hosted_agents"]
    assert hosted_agents["instance_shape"]["name"] == "LINUX_AMD64_4X16"
    assert hosted_agents["platform_settings"] == {"linux": {"agent_image_ref": None}}
    queue.refresh_from_db()
    assert (queue.instance_shape, queue.agent_image_ref) == ("LINUX_AMD64_4X16", "")


@pytest.mark.parametrize(
    ("shape", "body", "message"),
    [
        ("LINUX_AMD64_2X4", {"hostedAgents": {"instanceShape": "LINUX_ARM64_2X4"}},
         "Validation failed: instance_shape instance shape cannot be changed to LINUX_ARM64_2X4: "
         "only the size of a linux/amd64 queue can change"),
        ("LINUX_AMD64_2X4", {"hostedAgents": {"instanceShape": "MACOS_ARM64_M4_6X28"}},
         "Validation failed: instance_shape instance shape cannot be changed to "
         "MACOS_ARM64_M4_6X28: only the size of a linux/amd64 queue can change"),
        ("LINUX_AMD64_2X4", {"hostedAgents": {"instanceShape": "LINUX_AMD64_1X1"}},
         f"Validation failed: instance_shape 'LINUX_AMD64_1X1' is not a known instance shape; "
         f"use one of {SHAPES}"),
        ("LINUX_AMD64_2X4", {"hostedAgents": {"instanceShape": ""}},
         "Validation failed: hostedAgents.instanceShape this field may not be blank"),
        ("", {"hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"}},
         "Validation failed: instance_shape a queue cannot change between hosted and "
         "self-hosted"),
        ("", {"hostedAgents": {"agentImageRef": "custom:1"}},
         "Validation failed: Instance shape cannot be changed to "),
        ("MACOS_ARM64_M4_6X28", {"hostedAgents": {"instanceShape": "MACOS_ARM64_M4_6X28",
                                                  "agentImageRef": "custom:1"}},
         "Validation failed: agent_image_ref agent image ref cannot be configured for hosted mac "
         "queues"),
        ("LINUX_AMD64_2X4", {"hostedAgents": {"agentImageRef": "x" * 513}},
         "Validation failed: hostedAgents.agentImageRef ensure this field has no more than 512 "
         "characters"),
        ("", {"retry_agent_affinity": "nearest"},
         'Validation failed: retry_agent_affinity "nearest" is not a valid choice'),
        ("", {"description": "changed", "hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"}},
         "Validation failed: instance_shape a queue cannot change between hosted and "
         "self-hosted"),
    ],
)  # fmt: skip
def test_a_refused_update_is_422_and_changes_nothing(api, cluster, shape, body, message) -> None:
    queue = services.queue_create(cluster=cluster, key="q", instance_shape=shape)
    before = snapshot(queue)

    response = api.patch(queue_path(queue), body)

    assert response.status_code == 422
    assert response.json()["message"] == message
    assert snapshot(queue) == before


# --- delete -------------------------------------------------------------------------------------


def test_deleting_a_queue_is_204_and_a_default_queue_leaves_the_cluster_without_one(
    api, cluster
) -> None:
    queue = services.queue_create(cluster=cluster, key="default")
    kept = services.queue_create(cluster=cluster, key="kept")
    services.cluster_update(cluster=cluster, default_queue=queue)

    response = api.delete(queue_path(queue))

    assert response.status_code == 204
    assert response.content == b""
    assert list(Queue.objects.all()) == [kept]
    cluster.refresh_from_db()
    assert cluster.default_queue is None
    assert api.get(queue_path(queue)).json() == {"message": "No queue found"}


def test_deleting_the_last_hosted_queue_keeps_the_registry(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")

    assert api.delete(queue_path(queue)).status_code == 204

    assert Registry.objects.get().state == State.PENDING


# --- pause and resume ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "note"),
    [
        ({"dispatch_paused_note": "Security issue"}, "Security issue"),
        ({"note": "Security issue"}, "Security issue"),
        ({"dispatch_paused_note": "Security issue", "note": "other"}, "Security issue"),
        ({}, ""),
        ({"dispatch_paused_note": None}, ""),
    ],
)
def test_pausing_dispatch_stores_who_when_and_why_and_returns_the_queue(
    api, cluster, body, note
) -> None:
    queue = services.queue_create(cluster=cluster, key="default")

    response = api.post(queue_path(queue, "/pause_dispatch"), body)

    assert response.status_code == 200
    queue.refresh_from_db()
    assert queue.dispatch_paused is True
    assert queue.dispatch_paused_by == api.token.user
    assert queue.dispatch_paused_at is not None
    assert queue.dispatch_paused_note == note
    assert response.json() == api.get(queue_path(queue)).json()
    assert response.json()["dispatch_paused_note"] == (note or None)
    assert response.json()["dispatch_paused_by"]["email"] == "sam@example.com"


def test_pausing_a_paused_queue_is_422_and_keeps_the_first_pause(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="default")
    api.post(queue_path(queue, "/pause_dispatch"), {"dispatch_paused_note": "first"})
    before = snapshot(queue)

    response = api.post(queue_path(queue, "/pause_dispatch"), {"dispatch_paused_note": "second"})

    assert response.status_code == 422
    assert response.json() == {"message": "Cluster queue is already paused"}
    assert snapshot(queue) == before


def test_resuming_dispatch_clears_the_pause_and_returns_the_queue(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="default")
    services.queue_pause_dispatch(queue=queue, user=api.token.user, note="Security issue")

    response = api.post(queue_path(queue, "/resume_dispatch"))

    assert response.status_code == 200
    body = response.json()
    assert (
        body["dispatch_paused"], body["dispatch_paused_by"], body["dispatch_paused_at"],
        body["dispatch_paused_note"],
    ) == (False, None, None, None)  # fmt: skip
    queue.refresh_from_db()
    assert (
        queue.dispatch_paused, queue.dispatch_paused_by, queue.dispatch_paused_at,
        queue.dispatch_paused_note,
    ) == (False, None, None, "")  # fmt: skip


def test_resuming_a_running_queue_is_422_and_changes_nothing(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="default")
    before = snapshot(queue)

    response = api.post(queue_path(queue, "/resume_dispatch"))

    assert response.status_code == 422
    assert response.json() == {"message": "Cluster queue is not paused"}
    assert snapshot(queue) == before


# --- the environment of a job on a queue ------------------------------------------------------


def test_a_hosted_queue_environment_holds_the_published_registry_url(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    services.agent_environment_set(
        cluster=cluster, name="BUILDKITE_HOSTED_REGISTRY_URL", value=REGISTRY_URL, source="registry"
    )

    response = api.get(queue_path(queue, "/environment"))

    assert response.status_code == 200
    assert response.json() == {
        "queue": {"id": str(queue.pk), "key": "linux", "hosted": True},
        "env": {
            "BUILDKITE_AGENT_META_DATA_QUEUE": "linux",
            "BUILDKITE_CLUSTER_ID": str(cluster.pk),
            "BUILDKITE_CLUSTER_NAME": "Open Source",
            "BUILDKITE_COMPUTE_TYPE": "hosted",
            "BUILDKITE_HOSTED_REGISTRY_URL": REGISTRY_URL,
        },
        "sources": {
            "BUILDKITE_AGENT_META_DATA_QUEUE": "platform",
            "BUILDKITE_CLUSTER_ID": "platform",
            "BUILDKITE_CLUSTER_NAME": "platform",
            "BUILDKITE_COMPUTE_TYPE": "platform",
            "BUILDKITE_HOSTED_REGISTRY_URL": "registry",
        },
    }


def test_a_self_hosted_queue_environment_lacks_the_hosted_variables(api, cluster) -> None:
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    queue = services.queue_create(cluster=cluster, key="default")
    services.agent_environment_set(
        cluster=cluster, name="BUILDKITE_HOSTED_REGISTRY_URL", value=REGISTRY_URL, source="registry"
    )

    response = api.get(queue_path(queue, "/environment"))

    assert response.status_code == 200
    assert response.json() == {
        "queue": {"id": str(queue.pk), "key": "default", "hosted": False},
        "env": {
            "BUILDKITE_AGENT_META_DATA_QUEUE": "default",
            "BUILDKITE_CLUSTER_ID": str(cluster.pk),
            "BUILDKITE_CLUSTER_NAME": "Open Source",
            "BUILDKITE_COMPUTE_TYPE": "self-hosted",
        },
        "sources": {
            "BUILDKITE_AGENT_META_DATA_QUEUE": "platform",
            "BUILDKITE_CLUSTER_ID": "platform",
            "BUILDKITE_CLUSTER_NAME": "platform",
            "BUILDKITE_COMPUTE_TYPE": "platform",
        },
    }


def test_a_queue_environment_takes_a_fixed_number_of_queries(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    for n in range(20):
        services.agent_environment_set(cluster=cluster, name=f"V{n}", value="x", source="t")

    # The token (with its user and organization), the cluster, the queue, the environment.
    with expected_queries("api:queue-environment"):
        assert api.get(queue_path(queue, "/environment")).status_code == 200


# --- not found ----------------------------------------------------------------------------------

QUEUE_REQUESTS = [
    ("get", "", None),
    ("put", "", {"description": "x"}),
    ("patch", "", {"description": "x"}),
    ("delete", "", None),
    ("post", "/pause_dispatch", {"note": "x"}),
    ("post", "/resume_dispatch", None),
    ("get", "/environment", None),
]


@pytest.mark.parametrize("cluster_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
@pytest.mark.parametrize(("method", "body"), [("get", None), ("post", {"key": "new"})])
def test_the_queues_of_an_unknown_cluster_are_404(api, cluster_id, method, body) -> None:
    response = api.request(method, f"/clusters/{cluster_id}/queues", body)

    assert response.status_code == 404
    assert response.json() == {"message": "No cluster found"}
    assert not Queue.objects.exists()


def test_the_queues_of_another_organizations_cluster_are_404(api) -> None:
    other = services.organization_create(slug="other", name="Other")
    theirs = services.cluster_create(organization=other, name="theirs")
    services.queue_create(cluster=theirs, key="q0")

    for query in ({}, {"page": "2"}, {"page": "0"}):
        response = api.get(queues_path(theirs), **query)
        assert (response.status_code, response.json()) == (404, {"message": "No cluster found"})


def test_an_unknown_cluster_is_404_before_bad_page_parameters_are_400(api, cluster) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    assert api.get(f"/clusters/{unknown}/queues", page="0").status_code == 404
    response = api.get(queues_path(cluster), page="0")
    assert response.status_code == 400
    assert "page must be a positive integer" in response.json()["message"]


def test_a_page_past_the_last_of_a_clusters_queues_is_empty(api, cluster) -> None:
    services.queue_create(cluster=cluster, key="q0")

    response = api.get(queues_path(cluster), page="3")

    assert (response.status_code, response.json()) == (200, [])
    assert 'rel="first"' in response["Link"]


@pytest.mark.parametrize(("method", "action", "body"), QUEUE_REQUESTS)
def test_a_queue_of_an_unknown_cluster_is_404(api, cluster, method, action, body) -> None:
    queue = services.queue_create(cluster=cluster, key="default")
    if action == "/resume_dispatch":  # so that the request would succeed on the right cluster
        services.queue_pause_dispatch(queue=queue, user=None, note="paused")
    before = snapshot(queue)
    path = f"/clusters/00000000-0000-0000-0000-000000000000/queues/{queue.pk}{action}"

    response = api.request(method, path, body)

    assert response.status_code == 404
    assert response.json() == {"message": "No cluster found"}
    assert snapshot(queue) == before


@pytest.mark.parametrize("queue_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
@pytest.mark.parametrize(("method", "action", "body"), QUEUE_REQUESTS)
def test_an_unknown_queue_is_404(api, cluster, queue_id, method, action, body) -> None:
    response = api.request(method, f"{queues_path(cluster)}/{queue_id}{action}", body)

    assert response.status_code == 404
    assert response.json() == {"message": "No queue found"}


@pytest.mark.parametrize(("method", "action", "body"), QUEUE_REQUESTS)
def test_a_queue_of_another_cluster_of_the_organization_is_404_and_untouched(
    api, cluster, method, action, body
) -> None:
    other = services.cluster_create(organization=api.organization, name="Other")
    queue = services.queue_create(cluster=other, key="default")
    if action == "/resume_dispatch":  # so that the request would succeed on the right cluster
        services.queue_pause_dispatch(queue=queue, user=None, note="paused")
    before = snapshot(queue)

    response = api.request(method, f"{queues_path(cluster)}/{queue.pk}{action}", body)

    assert response.status_code == 404
    assert response.json() == {"message": "No queue found"}
    assert snapshot(queue) == before
