"""Buildkite's rules for queue updates and cluster flags: ``agentImageRef`` goes with
``instanceShape`` in the same hosted-agents object (422 ``Validation failed: Instance shape
cannot be changed to `` otherwise), and the hosted flags of a cluster are booleans (422
otherwise), over the test client and over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.core.exceptions import ValidationError

from clusters import services
from clusters.models import Cluster, Queue

pytestmark = pytest.mark.django_db

WITHOUT_SHAPE = {
    "message": "Validation failed: Instance shape cannot be changed to ",
    "errors": [{"message": "Instance shape cannot be changed to "}],
}


def queue_path(queue: Queue) -> str:
    return f"/clusters/{queue.cluster_id}/queues/{queue.pk}"


def state(queue: Queue) -> tuple[str, str, str]:
    queue.refresh_from_db()
    return queue.instance_shape, queue.agent_image_ref, queue.description


# --- agentImageRef goes with instanceShape ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"hostedAgents": {"agentImageRef": "custom:1"}},
        {"hostedAgents": {"agentImageRef": None}},
        {"hostedAgents": {"agentImageRef": ""}},
        {"hosted_agents": {"agent_image_ref": "custom:1"}},
        {"description": "changed", "hostedAgents": {"agentImageRef": "custom:1"}},
    ],
)
@pytest.mark.parametrize("method", ["put", "patch"])
def test_an_agent_image_without_the_shape_is_buildkites_422(api, cluster, body, method) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    services.queue_update(queue=queue, agent_image_ref="kept:1")

    response = getattr(api, method)(queue_path(queue), body)

    assert response.status_code == 422
    assert response.json() == WITHOUT_SHAPE
    assert state(queue) == ("LINUX_AMD64_2X4", "kept:1", "")


def test_with_the_current_shape_the_agent_image_is_set(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")

    response = api.patch(
        queue_path(queue),
        {"hostedAgents": {"instanceShape": "LINUX_AMD64_2X4", "agentImageRef": "custom:2"}},
    )

    assert response.status_code == 200
    assert response.json()["hosted_agents"]["platform_settings"] == {
        "linux": {"agent_image_ref": "custom:2"}
    }
    assert state(queue) == ("LINUX_AMD64_2X4", "custom:2", "")


def test_the_shape_alone_still_resizes(api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")

    response = api.patch(queue_path(queue), {"hostedAgents": {"instanceShape": "LINUX_AMD64_4X16"}})

    assert response.status_code == 200
    assert state(queue) == ("LINUX_AMD64_4X16", "", "")


def test_the_service_still_refuses_an_image_on_a_self_hosted_queue(cluster) -> None:
    """Unreachable through the API now (the shape must come with it); other callers keep it."""
    queue = services.queue_create(cluster=cluster, key="self-hosted")

    with pytest.raises(ValidationError) as refused:
        services.queue_update(queue=queue, agent_image_ref="custom:1")

    assert refused.value.message_dict == {
        "agent_image_ref": ["Agent image ref can only be set on hosted queues"]
    }


# --- hosted flags are booleans ------------------------------------------------------------------

FLAGS = ("hosted_git_mirror_enabled", "hosted_container_cache_enabled")


def flags(cluster: Cluster) -> tuple[bool, bool]:
    cluster.refresh_from_db()
    return cluster.hosted_git_mirror_enabled, cluster.hosted_container_cache_enabled


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("value", ["true", "yes", 1, 0, None, [], {}, "false"])
def test_a_hosted_flag_that_is_not_a_boolean_is_422(api, cluster, flag, value: Any) -> None:
    created = api.post("/clusters", {"name": "Other", flag: value})
    updated = api.patch(f"/clusters/{cluster.pk}", {flag: value})

    expected = {
        "message": f"Validation failed: {flag} must be a boolean (true or false)",
        "errors": [{"field": flag, "message": "Must be a boolean (true or false)."}],
    }
    assert (created.status_code, created.json()) == (422, expected)
    assert (updated.status_code, updated.json()) == (422, expected)
    assert list(Cluster.objects.values_list("name", flat=True)) == ["Open Source"]
    assert flags(cluster) == (False, False)


def test_boolean_hosted_flags_are_kept_and_shown(api, cluster) -> None:
    created = api.post("/clusters", {"name": "Hosted", "hosted_git_mirror_enabled": True}).json()
    updated = api.put(
        f"/clusters/{cluster.pk}",
        {"hosted_container_cache_enabled": True, "hosted_git_mirror_enabled": False},
    ).json()

    assert (created["hosted_git_mirror_enabled"], created["hosted_container_cache_enabled"]) == (
        True,
        False,
    )
    assert (updated["hosted_git_mirror_enabled"], updated["hosted_container_cache_enabled"]) == (
        False,
        True,
    )
    assert flags(cluster) == (False, True)
    assert flags(Cluster.objects.get(name="Hosted")) == (True, False)
    listed = {c["name"]: c["hosted_container_cache_enabled"] for c in api.get("/clusters").json()}
    assert listed == {"Hosted": False, "Open Source": True}


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_over_http_both_rules(live_server, api, cluster) -> None:
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    base = f"{live_server.url}/v2/organizations/acme"
    headers = {"Authorization": f"Bearer {api.secret}"}

    def send(method: str, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.request(method, base + path, json=body, headers=headers, timeout=10)

    image_alone = send("PATCH", queue_path(queue), {"hostedAgents": {"agentImageRef": "x:1"}})
    with_shape = send(
        "PUT",
        queue_path(queue),
        {"hostedAgents": {"instanceShape": "LINUX_AMD64_2X4", "agentImageRef": "x:1"}},
    )
    string_flag = send("PATCH", f"/clusters/{cluster.pk}", {"hosted_git_mirror_enabled": "true"})
    boolean_flag = send("PATCH", f"/clusters/{cluster.pk}", {"hosted_git_mirror_enabled": True})

    assert (image_alone.status_code, image_alone.json()) == (422, WITHOUT_SHAPE)
    assert with_shape.status_code == 200
    assert with_shape.json()["hosted_agents"]["platform_settings"]["linux"] == {
        "agent_image_ref": "x:1"
    }
    assert string_flag.status_code == 422
    assert string_flag.json()["message"] == (
        "Validation failed: hosted_git_mirror_enabled must be a boolean (true or false)"
    )
    assert (boolean_flag.status_code, boolean_flag.json()["hosted_git_mirror_enabled"]) == (
        200,
        True,
    )
