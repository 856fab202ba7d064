"""``GET /v2/organizations/{org}/audit_events``: the organization's audit log in Buildkite's shape,
newest first, with cursor pagination, filters and their 400s; another organization's token sees
none of it, and the scope is required (the 401/403/404 matrix is test_tenancy's)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from clusters import services
from clusters.audit import Actor, ActorType, AuditEvent, acting_as
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

PATH = "/audit_events"


def _record(organization: Any, type: str, at: dt.datetime, **fields: Any) -> AuditEvent:
    event = services.audit_record(
        type=type, organization=organization, subject_type=fields.pop("subject_type", "CLUSTER"),
        **fields,
    )  # fmt: skip
    AuditEvent.objects.filter(pk=event.pk).update(occurred_at=at)
    return AuditEvent.objects.get(pk=event.pk)


def _follow(api, response, rel: str) -> Any:
    link = response.json()["links"][rel]
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    return api.get(PATH, **query)


def test_an_event_in_buildkites_shape(api, cluster) -> None:
    response = api.get(PATH, type="CLUSTER_CREATED")

    assert response.status_code == 200
    [item] = response.json()["items"]
    event = AuditEvent.objects.get(type="CLUSTER_CREATED")
    assert item == {
        "uuid": str(event.uuid),
        "type": "CLUSTER_CREATED",
        "occurred_at": event.occurred_at.isoformat(timespec="milliseconds")[:-6] + "Z",
        "actor": {"type": "SYSTEM", "uuid": None, "name": "system"},
        "subject": {"type": "CLUSTER", "uuid": str(cluster.pk), "name": "Open Source"},
        "context": {"type": "SystemContext"},
        "data": {
            "name": "Open Source", "description": "", "emoji": "", "color": "",
            "hosted_git_mirror_enabled": False, "hosted_container_cache_enabled": False,
            "default_queue": None,
        },
        "url": f"http://testserver/v2/organizations/acme/audit_events/{event.uuid}",
    }  # fmt: skip
    assert api.get(urlsplit(item["url"]).path).json() == item


def test_the_apis_own_writes_are_listed_newest_first_with_the_token_as_actor(api) -> None:
    api.post("/clusters", {"name": "First"})
    api.post("/clusters", {"name": "Second"})

    items = api.get(PATH, actor_type="API_TOKEN").json()["items"]

    assert [item["subject"]["name"] for item in items] == ["Second", "First"]
    assert {item["actor"]["uuid"] for item in items} == {str(api.token.pk)}
    assert items[0]["context"]["type"] == "ApiContext"


def test_cursors_page_through_every_event_once_both_ways(api) -> None:
    AuditEvent.objects.all().delete()
    now = timezone.now()
    # Seven events, three of them at the same instant: the uuid breaks the tie.
    times = [now - dt.timedelta(minutes=m) for m in (0, 1, 1, 1, 2, 3, 4)]
    events = [_record(api.organization, "CLUSTER_UPDATED", at) for at in times]
    newest_first = [
        str(e.uuid) for e in sorted(events, key=lambda e: (e.occurred_at, e.uuid), reverse=True)
    ]

    pages, response = [], api.get(PATH, per_page=3)
    while True:
        assert response.status_code == 200
        pages.append([item["uuid"] for item in response.json()["items"]])
        if "next" not in response.json()["links"]:
            break
        assert 'rel="next"' in response["Link"]
        response = _follow(api, response, "next")

    assert [len(page) for page in pages] == [3, 3, 1]
    assert sum(pages, []) == newest_first
    assert "first" in response.json()["links"]
    back = _follow(api, response, "prev")
    assert [item["uuid"] for item in back.json()["items"]] == newest_first[3:6]
    back = _follow(api, back, "prev")
    assert [item["uuid"] for item in back.json()["items"]] == newest_first[:3]
    assert "prev" not in back.json()["links"]


def test_an_event_recorded_while_paging_does_not_shift_the_pages(api) -> None:
    AuditEvent.objects.all().delete()
    now = timezone.now()
    for minutes in (1, 2, 3, 4):
        _record(api.organization, "CLUSTER_UPDATED", now - dt.timedelta(minutes=minutes))
    first = api.get(PATH, per_page=2)

    _record(api.organization, "CLUSTER_CREATED", now)
    second = _follow(api, first, "next")

    assert [item["type"] for item in second.json()["items"]] == ["CLUSTER_UPDATED"] * 2
    assert "next" not in second.json()["links"]


def test_filters(api) -> None:
    AuditEvent.objects.all().delete()
    now = timezone.now()
    robot = Actor(ActorType.WEBHOOK, "delivery-1", "webhook delivery delivery-1")
    _record(api.organization, "CLUSTER_CREATED", now - dt.timedelta(days=3), subject_uuid="c1")
    with acting_as(robot):
        _record(api.organization, "CLUSTER_QUEUE_CREATED", now - dt.timedelta(days=2),
                subject_type="CLUSTER_QUEUE", subject_uuid="q1")  # fmt: skip
    _record(api.organization, "CLUSTER_DELETED", now - dt.timedelta(days=1), subject_uuid="c1")

    def types(**query: str) -> list[str]:
        response = api.get(PATH, **query)
        assert response.status_code == 200, response.content
        return [item["type"] for item in response.json()["items"]]

    assert types(type="CLUSTER_DELETED") == ["CLUSTER_DELETED"]
    assert types(subject_type="CLUSTER") == ["CLUSTER_DELETED", "CLUSTER_CREATED"]
    assert types(subject_uuid="c1") == ["CLUSTER_DELETED", "CLUSTER_CREATED"]
    assert types(actor_type="WEBHOOK") == ["CLUSTER_QUEUE_CREATED"]
    assert types(actor_uuid="delivery-1") == ["CLUSTER_QUEUE_CREATED"]
    after = (now - dt.timedelta(days=2, hours=1)).isoformat()
    before = (now - dt.timedelta(days=1, hours=1)).isoformat()
    assert types(occurred_after=after) == ["CLUSTER_DELETED", "CLUSTER_QUEUE_CREATED"]
    assert types(occurred_after=after, occurred_before=before) == ["CLUSTER_QUEUE_CREATED"]
    assert types(type="NOTHING_LIKE_IT") == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"type": "cluster created"}, "type 'cluster created' is not a valid type."),
        ({"subject_type": "x;"}, "subject_type 'x;' is not a valid subject_type."),
        ({"subject_uuid": "a\x00b"}, "subject_uuid 'a\\x00b' is not a valid subject_uuid."),
        (
            {"actor_type": "ROBOT"},
            "actor_type must be one of USER, API_TOKEN, WEBHOOK, AGENT, SYSTEM, not 'ROBOT'.",
        ),
        (
            {"occurred_after": "yesterday"},
            "occurred_after must be an ISO 8601 time (2025-01-31T12:00:00Z), not 'yesterday'.",
        ),
        (
            {"occurred_before": "2025-13-45T00:00:00Z"},
            "occurred_before must be an ISO 8601 time (2025-01-31T12:00:00Z), not "
            "'2025-13-45T00:00:00Z'.",
        ),
        (
            {"after": "bm90IGEgY3Vyc29y"},
            "after is not a cursor this endpoint gave: use the links of a page.",
        ),  # fmt: skip
        ({"before": "%%%"}, "before is not a cursor this endpoint gave: use the links of a page."),
        ({"after": "x", "before": "y"}, "Send after or before, not both."),
        ({"per_page": "0"}, "per_page must be a positive integer, not '0'."),
    ],
)
def test_a_bad_filter_or_cursor_is_a_400_naming_it(api, query: dict[str, str], message) -> None:
    response = api.get(PATH, **query)

    assert response.status_code == 400
    assert response.json() == {"message": message}


def test_another_organizations_token_sees_none_of_them(api, other_api, cluster) -> None:
    acme_event = AuditEvent.objects.filter(organization=api.organization).first()
    assert acme_event is not None

    listed = other_api.get(PATH, per_page=100).json()["items"]
    named = other_api.get(f"/v2/organizations/acme{PATH}")
    detail = other_api.get(f"{PATH}/{acme_event.uuid}")

    assert listed  # its own: its organization's and its token's creation
    assert {item["uuid"] for item in listed}.isdisjoint(
        str(pk) for pk in AuditEvent.objects.filter(organization=api.organization).values_list(
            "pk", flat=True
        )
    )  # fmt: skip
    assert named.status_code == 404
    assert detail.status_code == 404
    assert detail.json() == {"message": "No audit event found"}


def test_the_scope_is_required(make_api, client) -> None:
    lacking = make_api(scopes=["read_clusters"])

    assert lacking.get(PATH).status_code == 403
    assert lacking.get(PATH).json() == {
        "message": "This API token needs the read_audit_events scope."
    }
    assert client.get(f"/v2/organizations/acme{PATH}").status_code == 401


def test_query_counts(api, cluster) -> None:
    event = AuditEvent.objects.filter(organization=api.organization).first()
    assert event is not None

    with expected_queries("api:audit-events"):
        assert api.get(PATH).status_code == 200
    with expected_queries("api:audit-event"):
        assert api.get(f"{PATH}/{event.uuid}").status_code == 200
