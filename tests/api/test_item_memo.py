"""A list's items memoized by their rows' values (``controlplane.api.memo``): a page answered
from the memo is the page the serializers render, and a changed row, or another host, is
rendered afresh."""

from __future__ import annotations

import pytest

from clusters import services
from controlplane.api import memo, pages
from tests.api.conftest import Api


def _plain_and_drf(api: Api, path: str, **extra: str) -> tuple[bytes, bytes]:
    fast = api.client.get(api.base + path, extra, **api._headers())
    drf = api.client.get(api.base + path, {"format": "json", **extra}, **api._headers())
    assert fast.status_code == drf.status_code == 200
    return fast.content, drf.content


@pytest.mark.django_db
def test_a_memoized_page_is_the_rendered_page_and_a_changed_row_is_rendered_again(
    api: Api, cluster
) -> None:
    services.queue_create(cluster=cluster, key="q0", created_by=api.token.user)
    services.queue_create(cluster=cluster, key="hosted", instance_shape="LINUX_AMD64_2X4")
    memo.clear()
    for path in ("/clusters", f"/clusters/{cluster.pk}/queues"):
        first, drf = _plain_and_drf(api, path)
        assert first == drf
        size = len(memo._items)
        assert size > 0
        again, _ = _plain_and_drf(api, path)
        assert again == first
        assert len(memo._items) == size

    services.cluster_update(cluster=cluster, name="Renamed", emoji=":x:")
    fast, drf = _plain_and_drf(api, "/clusters")
    assert fast == drf
    assert b'"Renamed"' in fast

    other = api.client.get(api.base + "/clusters", HTTP_HOST="localhost:8000", **api._headers())
    assert b"http://localhost:8000/" in other.content
    assert b"http://testserver/" not in other.content


@pytest.mark.django_db
def test_the_memo_stays_bounded(api: Api, cluster, monkeypatch) -> None:
    monkeypatch.setattr(memo, "MAXSIZE", 2)
    for index in range(4):
        services.cluster_create(organization=api.organization, name=f"c{index}")
    memo.clear()
    fast, drf = _plain_and_drf(api, "/clusters")
    assert fast == drf
    assert len(memo._items) == 2


@pytest.mark.django_db
def test_a_page_asked_for_again_builds_no_row_objects(api: Api, cluster, monkeypatch) -> None:
    services.queue_create(cluster=cluster, key="q0", created_by=api.token.user)
    memo.clear()
    for path in ("/clusters", f"/clusters/{cluster.pk}/queues"):
        first, _ = _plain_and_drf(api, path)
        with monkeypatch.context() as patched:
            patched.setattr(pages, "_rows", _no_rows)
            again = api.client.get(api.base + path, **api._headers())
        assert again.status_code == 200
        assert again.content == first
    assert len(memo._pages) == 2


@pytest.mark.django_db
def test_the_pages_memo_stays_bounded(api: Api, cluster, monkeypatch) -> None:
    monkeypatch.setattr(memo, "MAXPAGES", 1)
    memo.clear()
    for path in ("/clusters", f"/clusters/{cluster.pk}/queues", "/clusters"):
        fast, drf = _plain_and_drf(api, path)
        assert fast == drf
    assert len(memo._pages) == 1


def _no_rows(*args: object) -> None:
    raise AssertionError("a memoized page built its rows")
