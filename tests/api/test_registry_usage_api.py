"""``.../registry/usage``, ``.../registry/repositories`` and a repository's ``.../tags``: what a
cluster's registry holds, read from the inventory (``registries.inventory``), which the tests
fill through the usage writers as the event path does. Tag deletion against a real registry is
in ``tests/registries/test_tag_deletion.py``."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from clusters.models import Cluster
from registries import services
from registries.inventory import UsageDay
from registries.models import Registry, State
from tests.registries.factories import RegistryFactory, inventory_push
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=dt.UTC)
SHARED, LAYER = "sha256:shared", "sha256:layer"


@pytest.fixture
def registry(cluster: Cluster) -> Registry:
    return RegistryFactory(cluster=cluster, state=State.READY)


def base(cluster: Cluster) -> str:
    return f"/clusters/{cluster.pk}/registry"


def test_an_empty_registry_uses_nothing(api, cluster, registry) -> None:
    body = api.get(f"{base(cluster)}/usage", days=2).json()

    today = timezone.now().date()
    assert body == {
        "bytes": 0,
        "repositories": 0,
        "tags": 0,
        "last_push_at": None,
        "last_pull_at": None,
        "scanned_at": None,
        "quota": {
            "set_by": None,
            "hard_bytes": None,
            "soft_bytes": None,
            "soft_bytes_set": None,
            "hard_tags": None,
            "used_bytes": 0,
            "used_tags": 0,
            "percent": None,
            "state": "unlimited",
            "message": "No quota applies to this registry.",
            "push_refused": None,
        },
        "days": [
            {"day": str(today - dt.timedelta(days=1)), "pushes": 0, "pulls": 0, "bytes": None},
            {"day": str(today), "pushes": 0, "pulls": 0, "bytes": None},
        ],
    }


def test_usage_counts_shared_layers_once_and_gives_every_day(api, cluster, registry) -> None:
    app, tools = f"{registry.namespace}/app", f"{registry.namespace}/team/tools"
    inventory_push(registry, app, "1", "sha256:m1", {SHARED: 1000}, at=T0)
    inventory_push(registry, tools, "latest", "sha256:m2", {SHARED: 1000, LAYER: 500}, at=T0)
    today = timezone.now().date()
    services.usage_count(registry, repository=app, day=today, pushes=2, pulls=3)
    services.pulled(registry, repository=app, reference="1", at=T0 + dt.timedelta(seconds=1))
    # Storage figured 40 days ago and never since within the window: carried over.
    UsageDay.objects.filter(registry=registry, repository="").update(bytes=None)
    UsageDay.objects.create(
        registry=registry, repository="", day=today - dt.timedelta(days=40), bytes=77
    )

    response = api.get(f"{base(cluster)}/usage")

    assert response.status_code == 200
    body = response.json()
    # m1 (100) + m2 (100) + SHARED once (1000) + LAYER (500)
    assert (body["bytes"], body["repositories"], body["tags"]) == (1700, 2, 2)
    assert body["last_push_at"] == "2025-03-04T05:06:07.890Z"
    assert body["last_pull_at"] == "2025-03-04T05:06:08.890Z"
    assert len(body["days"]) == 30
    assert body["days"][0] == {
        "day": str(today - dt.timedelta(days=29)),
        "pushes": 0,
        "pulls": 0,
        "bytes": 77,
    }
    assert body["days"][-1] == {"day": str(today), "pushes": 2, "pulls": 3, "bytes": 77}


@pytest.mark.parametrize("days", ["0", "366", "-1", "ten", "1.5"])
def test_a_bad_number_of_days_is_400(api, cluster, registry, days) -> None:
    response = api.get(f"{base(cluster)}/usage", days=days)

    assert response.status_code == 400
    assert response.json() == {
        "message": f"days must be a whole number from 1 to 365, not {days!r}."
    }


def test_a_year_of_days_is_the_most(api, cluster, registry) -> None:
    assert len(api.get(f"{base(cluster)}/usage", days=365).json()["days"]) == 365


def _three_repositories(registry: Registry) -> None:
    namespace = registry.namespace
    inventory_push(registry, f"{namespace}/b", "1", "sha256:b", {"sha256:big": 9000}, at=T0)
    inventory_push(
        registry, f"{namespace}/a/nested", "1", "sha256:a", {"sha256:small": 10},
        at=T0 + dt.timedelta(hours=1),
    )  # fmt: skip
    inventory_push(registry, f"{namespace}/c", "1", "sha256:c", {"sha256:mid": 500}, at=T0)
    inventory_push(registry, f"{namespace}/c", "2", "sha256:c", {"sha256:mid": 500}, at=T0)


@pytest.mark.parametrize(
    ("sort", "names"),
    [
        (None, ["a/nested", "b", "c"]),
        ("name", ["a/nested", "b", "c"]),
        ("bytes", ["b", "c", "a/nested"]),
        ("last_push", ["a/nested", "b", "c"]),
    ],
)
def test_repositories_in_the_order_asked(api, cluster, registry, sort, names) -> None:
    _three_repositories(registry)

    params = {"sort": sort} if sort else {}
    response = api.get(f"{base(cluster)}/repositories", **params)

    assert response.status_code == 200
    assert [repository["name"] for repository in response.json()] == names


def test_a_repository_as_the_api_shows_it(api, cluster, registry) -> None:
    _three_repositories(registry)

    body = api.get(f"{base(cluster)}/repositories", sort="bytes", per_page=2).json()

    assert body[1] == {
        "name": "c",
        "full_name": f"{registry.namespace}/c",
        "bytes": 600,
        "tag_count": 2,
        "last_push_at": "2025-03-04T05:06:07.890Z",
        "last_pull_at": None,
    }
    assert len(body) == 2


def test_an_unknown_order_is_400(api, cluster, registry) -> None:
    response = api.get(f"{base(cluster)}/repositories", sort="size")

    assert response.status_code == 400
    assert response.json() == {"message": "sort must be one of name, bytes, last_push, not 'size'."}


def test_a_repositorys_tags_newest_first(api, cluster, registry) -> None:
    name = f"{registry.namespace}/team/app"
    inventory_push(registry, name, "v1", "sha256:m1", {SHARED: 1000}, at=T0)
    inventory_push(
        registry, name, "v2", "sha256:m2", {SHARED: 1000, LAYER: 5}, at=T0 + dt.timedelta(days=1)
    )
    services.pulled(registry, repository=name, reference="sha256:m1", at=T0)

    response = api.get(f"{base(cluster)}/repositories/team/app/tags")

    assert response.status_code == 200
    assert response.json() == [
        {
            "tag": "v2",
            "digest": "sha256:m2",
            "bytes": 1105,
            "pushed_at": "2025-03-05T05:06:07.890Z",
            "last_pulled_at": None,
        },
        {
            "tag": "v1",
            "digest": "sha256:m1",
            "bytes": 1100,
            "pushed_at": "2025-03-04T05:06:07.890Z",
            "last_pulled_at": "2025-03-04T05:06:07.890Z",
        },
    ]


def test_the_tags_of_an_unknown_repository_are_404(api, cluster, registry) -> None:
    response = api.get(f"{base(cluster)}/repositories/nope/tags")

    assert response.status_code == 404
    assert response.json() == {"message": "No repository 'nope' in this registry"}


@pytest.mark.parametrize("path", ["usage", "repositories", "repositories/app/tags"])
def test_without_a_registry_every_read_is_404(api, cluster, path) -> None:
    response = api.get(f"{base(cluster)}/{path}")

    assert response.status_code == 404
    assert response.json() == {"message": "No registry found"}


@pytest.mark.parametrize("path", ["usage", "repositories", "repositories/app/tags"])
def test_another_organizations_token_sees_none_of_it(other_api, cluster, registry, path) -> None:
    inventory_push(registry, f"{registry.namespace}/app", "1", "sha256:m1", {SHARED: 1})

    for response in (
        other_api.get(f"/v2/organizations/acme{base(cluster)}/{path}"),
        other_api.get(f"{base(cluster)}/{path}"),
    ):
        assert response.status_code == 404
        assert "sha256" not in response.content.decode()


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("registries-api:registry-usage", "usage"),
        ("registries-api:registry-repositories", "repositories"),
        ("registries-api:registry-tags", "repositories/app/tags"),
    ],
)
def test_a_page_of_1_or_20_takes_the_same_number_of_queries(
    api, cluster, registry, name, path
) -> None:
    def queries() -> int:
        with expected_queries(name) as captured:
            assert api.get(f"{base(cluster)}/{path}").status_code == 200
        return len(captured)

    inventory_push(registry, f"{registry.namespace}/app", "0", "sha256:m0", {SHARED: 1})
    one = queries()
    for index in range(1, 20):
        inventory_push(
            registry, f"{registry.namespace}/app", str(index), f"sha256:m{index}", {SHARED: 1}
        )
        inventory_push(registry, f"{registry.namespace}/other{index}", "1", "sha256:m0", {})
    assert queries() == one


# --- deletion: what is refused before the registry is asked ---------------------------------


def test_deleting_an_unknown_repository_or_tag_is_404(api, cluster, registry) -> None:
    inventory_push(registry, f"{registry.namespace}/app", "1", "sha256:m1", {SHARED: 1})

    unknown_repository = api.delete(f"{base(cluster)}/repositories/nope/tags/1")
    unknown_tag = api.delete(f"{base(cluster)}/repositories/app/tags/2")

    assert unknown_repository.status_code == unknown_tag.status_code == 404
    assert unknown_repository.json() == {"message": "No repository 'nope' in this registry"}
    assert unknown_tag.json() == {"message": "No tag '2' in repository 'app'"}


@pytest.mark.parametrize("state", [State.FAILED, State.DEPROVISIONING])
def test_deleting_a_tag_of_a_registry_that_is_not_ready_is_409(api, cluster, state) -> None:
    registry = RegistryFactory(cluster=cluster, state=State.READY)
    inventory_push(registry, f"{registry.namespace}/app", "1", "sha256:m1", {SHARED: 1})
    Registry.objects.filter(pk=registry.pk).update(
        state=state, url="", deprovision_requested_at=timezone.now()
    )

    response = api.delete(f"{base(cluster)}/repositories/app/tags/1")

    assert response.status_code == 409
    assert response.json() == {
        "message": f"The registry is {state}: tags can be deleted only while it is ready."
    }
    assert api.get(f"{base(cluster)}/usage").json()["tags"] == 1


def test_a_bad_include_shared_digest_is_400(api, cluster, registry) -> None:
    response = api.delete(f"{base(cluster)}/repositories/app/tags/1?include_shared_digest=yes")

    assert response.status_code == 400
    assert response.json() == {
        "message": "include_shared_digest must be one of true, false, not 'yes'."
    }
