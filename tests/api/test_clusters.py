"""``/v2/organizations/{org}/clusters``: Buildkite's shapes, status codes and errors."""

from __future__ import annotations

import base64

import pytest

from clusters import services
from clusters.models import Cluster
from registries.models import Registry, State
from tests.api.expected import TIMESTAMP
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db


def test_creating_a_cluster_answers_201_with_buildkites_shape(api) -> None:
    response = api.post(
        "/clusters",
        {"name": "Open Source", "description": "Our OSS", "emoji": ":technologist:",
         "color": "#FFE0F1"},
    )  # fmt: skip

    assert response.status_code == 201
    body = response.json()
    cluster = Cluster.objects.get()
    url = f"http://testserver/v2/organizations/acme/clusters/{cluster.pk}"
    assert body == {
        "id": str(cluster.pk),
        "graphql_id": base64.b64encode(f"Cluster---{cluster.pk}".encode()).decode(),
        "default_queue_id": None,
        "name": "Open Source",
        "description": "Our OSS",
        "emoji": ":technologist:",
        "color": "#FFE0F1",
        "maintainers": {"users": [], "teams": []},
        "url": url,
        "web_url": f"http://testserver/admin/clusters/cluster/{cluster.pk}/change/",
        "queues_url": f"{url}/queues",
        "default_queue_url": None,
        "created_at": body["created_at"],
        "created_by": {
            "id": str(api.token.user.pk),
            "graphql_id": base64.b64encode(f"User---{api.token.user.pk}".encode()).decode(),
            "name": "Sam Kim",
            "email": "sam@example.com",
            "avatar_url": body["created_by"]["avatar_url"],
            "created_at": body["created_by"]["created_at"],
        },
        "hosted_git_mirror_enabled": False,
        "hosted_container_cache_enabled": False,
    }
    assert TIMESTAMP.fullmatch(body["created_at"])
    assert body["created_by"]["avatar_url"].startswith("https://www.gravatar.com/avatar/")
    assert cluster.created_by == api.token.user


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Validation failed: name this field is required"),
        ({"name": ""}, "Validation failed: name this field may not be blank"),
        ({"name": "x", "color": "red"}, "Validation failed: color this value does not match "
         "the required pattern"),
        ({"name": "x" * 101}, "Validation failed: name ensure this field has no more than 100 "
         "characters"),
    ],
)  # fmt: skip
def test_an_invalid_cluster_is_422_and_writes_nothing(api, body, message) -> None:
    response = api.post("/clusters", body)

    assert response.status_code == 422
    assert response.json()["message"] == message
    assert Cluster.objects.count() == 0


def test_a_duplicate_cluster_name_is_422(api) -> None:
    assert api.post("/clusters", {"name": "Open Source"}).status_code == 201

    response = api.post("/clusters", {"name": "Open Source"})

    assert response.status_code == 422
    assert response.json()["message"].startswith("Validation failed: ")
    assert Cluster.objects.count() == 1


def test_malformed_json_is_400_and_a_non_object_is_422(api) -> None:
    response = api.client.post(
        f"{api.base}/clusters", "{not json", content_type="application/json", **api._headers()
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("JSON parse error")

    assert api.post("/clusters", ["a list"]).status_code == 422


def test_the_list_is_paginated_with_a_link_header(api) -> None:
    for name in ("a", "b", "c"):
        api.post("/clusters", {"name": name})

    first = api.get("/clusters", per_page=2)
    second = api.get("/clusters", per_page=2, page=2)
    beyond = api.get("/clusters", per_page=2, page=5)

    def page(number: int) -> str:
        return f"http://testserver/v2/organizations/acme/clusters?page={number}&per_page=2"

    assert [c["name"] for c in first.json()] == ["a", "b"]
    assert first["Link"] == f'<{page(2)}>; rel="next", <{page(2)}>; rel="last"'
    assert [c["name"] for c in second.json()] == ["c"]
    assert second["Link"] == f'<{page(1)}>; rel="prev", <{page(1)}>; rel="first"'
    assert beyond.json() == []
    assert api.get("/clusters").json()[0]["name"] == "a"
    assert not api.get("/clusters").has_header("Link")  # one page: nothing to link to


@pytest.mark.parametrize(("name", "value"), [("page", "0"), ("per_page", "x"), ("page", "-1")])
def test_a_bad_page_is_400(api, name, value) -> None:
    response = api.get("/clusters", **{name: value})
    assert response.status_code == 400
    assert response.json() == {"message": f"{name} must be a positive integer, not {value!r}."}


def test_a_page_far_past_the_end_is_an_empty_list(api) -> None:
    api.post("/clusters", {"name": "a"})
    response = api.get("/clusters", page=str(2**63))
    assert response.status_code == 200
    assert response.json() == []


def test_renaming_a_cluster_to_a_taken_name_is_422_on_the_name(api) -> None:
    api.post("/clusters", {"name": "a"})
    cluster_id = api.post("/clusters", {"name": "b"}).json()["id"]

    response = api.patch(f"/clusters/{cluster_id}", {"name": "a"})

    assert response.status_code == 422
    assert response.json() == {
        "message": "Validation failed: name a cluster named 'a' already exists in this "
        "organization",
        "errors": [
            {"field": "name", "message": "A cluster named 'a' already exists in this organization."}
        ],
    }
    assert Cluster.objects.get(pk=cluster_id).name == "b"


def test_per_page_is_capped_at_100(api) -> None:
    organization = api.organization
    for index in range(101):
        Cluster.objects.create(organization=organization, name=f"c{index:03d}")
    assert len(api.get("/clusters", per_page=500).json()) == 100


def test_listing_1_or_50_clusters_takes_the_same_number_of_queries(api) -> None:
    def queries() -> int:
        # The token (with its user and organization), the page with its total.
        with expected_queries("api:clusters") as captured:
            assert api.get("/clusters", per_page=100).status_code == 200
        return len(captured)

    services.cluster_create(organization=api.organization, name="one", created_by=api.token.user)
    one = queries()
    for index in range(49):
        services.cluster_create(
            organization=api.organization, name=f"c{index}", created_by=api.token.user
        )
    assert queries() == one


def test_reading_a_cluster_takes_a_fixed_number_of_queries(api) -> None:
    cluster_id = api.post("/clusters", {"name": "Open Source"}).json()["id"]
    # The token (with its user and organization), then the cluster (with its creator).
    with expected_queries("api:cluster"):
        assert api.get(f"/clusters/{cluster_id}").status_code == 200


@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_both_change_only_what_is_sent(api, method) -> None:
    cluster_id = api.post("/clusters", {"name": "Open Source", "emoji": ":a:"}).json()["id"]

    response = getattr(api, method)(f"/clusters/{cluster_id}", {"description": "changed"})

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["emoji"], body["description"]) == ("Open Source", ":a:", "changed")


def test_the_default_queue_is_set_to_a_queue_of_the_cluster_only(api) -> None:
    cluster = services.cluster_create(organization=api.organization, name="Open Source")
    queue = services.queue_create(cluster=cluster, key="default")
    elsewhere = services.queue_create(
        cluster=services.cluster_create(organization=api.organization, name="Other"), key="x"
    )

    refused = api.put(f"/clusters/{cluster.pk}", {"default_queue_id": str(elsewhere.pk)})
    accepted = api.put(f"/clusters/{cluster.pk}", {"default_queue_id": str(queue.pk)})
    cleared = api.put(f"/clusters/{cluster.pk}", {"default_queue_id": None})

    assert refused.status_code == 422
    assert refused.json()["message"] == (
        "Validation failed: default_queue_id no queue with this id in the cluster"
    )
    assert accepted.status_code == 200
    assert accepted.json()["default_queue_id"] == str(queue.pk)
    assert accepted.json()["default_queue_url"] == (
        f"http://testserver/v2/organizations/acme/clusters/{cluster.pk}/queues/{queue.pk}"
    )
    assert cleared.json()["default_queue_id"] is None


def test_deleting_a_cluster_is_204_and_starts_deprovisioning_its_registry(
    api, django_capture_on_commit_callbacks
) -> None:
    cluster = services.cluster_create(organization=api.organization, name="Open Source")
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")

    response = api.delete(f"/clusters/{cluster.pk}")

    assert response.status_code == 204
    assert not Cluster.objects.filter(pk=cluster.pk).exists()
    assert Registry.objects.get().state == State.DEPROVISIONING
    assert api.get(f"/clusters/{cluster.pk}").status_code == 404


@pytest.mark.parametrize("cluster_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_cluster_is_404(api, cluster_id) -> None:
    response = api.get(f"/clusters/{cluster_id}")
    assert response.status_code == 404
    assert response.json() == {"message": "No cluster found"}
