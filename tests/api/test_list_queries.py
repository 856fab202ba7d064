"""Every list of the REST API takes the same queries for 1 item and for a page of 100 (the pinned
count: the token, then the page with its total), and its pages count as Buildkite's do."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clusters import services
from clusters.models import Cluster
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db


def _clusters(api: Any, indexes: range) -> None:
    for index in indexes:
        services.cluster_create(
            organization=api.organization, name=f"c{index:03}", created_by=api.token.user
        )


def _queues(api: Any, cluster: Cluster, indexes: range) -> None:
    for index in indexes:
        queue = services.queue_create(
            cluster=cluster,
            key=f"q{index:03}",
            instance_shape="LINUX_AMD64_2X4" if index % 2 else "",
            created_by=api.token.user,
        )
        if index % 3 == 0:  # a second user on the row: who paused it
            services.queue_pause_dispatch(queue=queue, user=api.token.user, note="n")


def _tokens(api: Any, cluster: Cluster, indexes: range) -> None:
    for index in indexes:
        services.agent_token_create(
            cluster=cluster, description=f"t{index}", created_by=api.token.user
        )


LISTS: dict[str, tuple[str, Callable[..., None]]] = {
    "api:clusters": ("/clusters", lambda api, cluster, indexes: _clusters(api, indexes)),
    "api:queues": ("/clusters/{cluster}/queues", _queues),
    "api:tokens": ("/clusters/{cluster}/tokens", _tokens),
}


@pytest.mark.parametrize("name", list(LISTS))
def test_a_page_of_1_or_100_takes_the_pinned_queries(api, name) -> None:
    cluster = services.cluster_create(organization=api.organization, name="owner")
    path, add = LISTS[name]
    path = path.format(cluster=cluster.pk)

    def page_size() -> int:
        with expected_queries(name):
            response = api.get(path, per_page=100)
        assert response.status_code == 200
        return len(response.json())

    add(api, cluster, range(1))
    one = page_size()
    add(api, cluster, range(1, 100))

    assert (one, page_size()) == (2 if name == "api:clusters" else 1, 100)


@pytest.mark.parametrize(
    ("clusters", "page", "items", "links", "queries"),
    [
        (5, 1, 2, {"next": 2, "last": 3}, 2),
        (5, 3, 1, {"prev": 2, "first": 1}, 2),
        (5, 4, 0, {"prev": 3, "first": 1, "last": 3}, 3),
        (0, 1, 0, {}, 2),
    ],
    ids=["first page", "last page", "past the end", "an empty list"],
)
def test_the_total_comes_with_the_page_and_is_counted_apart_only_past_the_end(
    api, clusters, page, items, links, queries
) -> None:
    _clusters(api, range(clusters))

    with CaptureQueriesContext(connection) as captured:
        response = api.get("/clusters", per_page=2, page=page)

    assert response.status_code == 200
    assert len(response.json()) == items
    assert _links(response.get("Link", "")) == links
    assert len(captured) == queries  # the token, the page and its total; past the end, a count


def _links(header: str) -> dict[str, int]:
    """``{rel: page}`` of a ``Link`` header."""
    found = re.findall(r'<[^>]*[?&]page=(\d+)[^>]*>; rel="(\w+)"', header)
    return {rel: int(page) for page, rel in found}
