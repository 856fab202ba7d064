"""REST API GETs without the REST framework (``OrganizationAPIView.fast``): a plain GET answers
what the REST framework answers (``?format=json`` still goes through it), status, headers and
bytes, its errors included; and timestamps keep strftime's text."""

from __future__ import annotations

import datetime as dt
import json
import random
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from clusters import services
from clusters.models import ApiScope
from controlplane import hotcache
from controlplane.api.fields import timestamp
from tests.api.conftest import Api

#: Headers that differ between any two answers.
VOLATILE = {
    "X-Request-ID",
    "RateLimit-Remaining",
    "RateLimit-User-Remaining",
    "RateLimit-Reset",
    "RateLimit-User-Reset",
    "Retry-After",
}


def both(api: Api, path: str, **params: str) -> tuple[dict[str, object], dict[str, object]]:
    """``path`` asked plainly (the fast path) and with ``?format=json`` (the REST framework)."""

    def answer(**extra: str) -> dict[str, object]:
        response = api.get(path, **params, **extra)
        headers = {k: v for k, v in response.items() if k not in VOLATILE}
        if "Link" in headers:  # the pages' links keep the request's parameters
            headers["Link"] = headers["Link"].replace("format=json&", "")
        return {"status": response.status_code, "headers": headers, "body": response.content}

    return answer(), answer(format="json")


@pytest.fixture
def world(api: Api, cluster) -> Api:
    for index in range(3):
        services.queue_create(cluster=cluster, key=f"q{index}", created_by=api.token.user)
    services.queue_create(cluster=cluster, key="hosted", instance_shape="LINUX_AMD64_2X4")
    services.agent_token_create(cluster=cluster, description="ci")
    services.cluster_create(organization=api.organization, name="Second")
    return api


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "",
        "/clusters",
        "/clusters/{cluster}",
        "/clusters/{cluster}/queues",
        "/clusters/{cluster}/tokens",
        "/clusters/{cluster}/registry",
        "/clusters/{missing}/queues",
    ],
)
def test_a_plain_get_answers_what_the_rest_framework_answers(world, cluster, path: str) -> None:
    path = path.format(cluster=cluster.pk, missing="9" * 8 + "-0000-0000-0000-" + "0" * 12)
    for params in ({}, {"per_page": "1", "page": "2"}, {"page": "0"}, {"page": "99"}):
        fast, drf = both(world, path, **params)
        assert fast == drf, params


@pytest.mark.django_db
def test_errors_after_the_token_answer_alike(make_api, cluster) -> None:
    lacking = make_api(scopes=[ApiScope.READ_ORGANIZATIONS])
    fast, drf = both(lacking, "/clusters")
    assert fast == drf
    assert fast["status"] == 403


@pytest.mark.django_db
def test_over_the_rate_limit_answers_alike(api, cluster, settings) -> None:
    settings.API_RATE_LIMIT_TOKEN = 1
    assert api.get("/clusters").status_code == 200
    fast, drf = both(api, "/clusters")
    assert fast["status"] == drf["status"] == 429
    assert fast["headers"].keys() == drf["headers"].keys()
    # Each counts: the second is one more (and a second may have passed).
    moving = {"current", "reset", "message"}
    assert json.loads(fast["body"]).keys() == json.loads(drf["body"]).keys() >= moving
    assert {k: v for k, v in json.loads(fast["body"]).items() if k not in moving} == {
        k: v for k, v in json.loads(drf["body"]).items() if k not in moving
    }


@pytest.mark.django_db(transaction=True)
def test_a_warm_list_is_its_page_query_alone(world, settings, django_assert_num_queries) -> None:
    """The token from the cache, no REST framework: a page of clusters is one query."""
    settings.HOT_CACHE_SECONDS = 3600
    hotcache.clear()
    assert world.get("/clusters").status_code == 200
    with django_assert_num_queries(1):
        assert world.get("/clusters").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["html", "bad token", "no token"])
def test_what_the_fast_path_leaves_to_the_rest_framework(api, cluster, case: str) -> None:
    """Other formats, a bad token, no token: the REST framework's own answers."""
    headers = {
        "html": {"HTTP_ACCEPT": "text/html", "HTTP_AUTHORIZATION": f"Bearer {api.secret}"},
        "bad token": {"HTTP_AUTHORIZATION": "Bearer nope"},
        "no token": {},
    }[case]
    response = Client().get(f"{api.base}/clusters", **headers)
    if case == "html":
        assert response.status_code == 406
    else:
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_timestamps_keep_strftimes_text() -> None:
    def strftime(value: dt.datetime) -> str:
        utc = value.astimezone(dt.UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"

    zones = [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), ZoneInfo("Europe/Paris")]
    rng = random.Random(15)
    for _ in range(5000):
        value = dt.datetime(
            rng.choice([rng.randint(2, 9998), 999, 1000, 2026]),
            rng.randint(1, 12),
            rng.randint(1, 28),
            rng.randint(0, 23),
            rng.randint(0, 59),
            rng.randint(0, 59),
            rng.choice([0, 999, 1000, 999_999, rng.randint(0, 999_999)]),
            tzinfo=rng.choice(zones),
        )
        assert timestamp(value) == strftime(value)
