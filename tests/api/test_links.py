"""``controlplane.api.links.Links`` answers what ``build_absolute_uri(reverse(...))`` answers,
reversing each route once per request."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import clear_script_prefix, path, reverse, set_script_prefix

from controlplane.api import links as links_module
from controlplane.api.links import Links

CLUSTER, QUEUE = uuid.uuid4(), uuid.uuid4()

#: (route, arguments): the routes the API's responses link to, and the console's.
ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("api:organization", {"org_slug": "acme-corp"}),
    ("api:cluster", {"org_slug": "acme-corp", "cluster_id": CLUSTER}),
    ("api:queues", {"org_slug": "acme", "cluster_id": CLUSTER}),
    ("api:queue", {"org_slug": "acme", "cluster_id": CLUSTER, "queue_id": QUEUE}),
    ("api:token", {"org_slug": "acme", "cluster_id": CLUSTER, "token_id": QUEUE}),
    ("admin:clusters_cluster_change", {"object_id": CLUSTER}),
    ("admin:clusters_organization_change", {"object_id": 42}),
]


def _request(**extra: Any) -> Any:
    return RequestFactory().get("/anything", **extra)


@pytest.fixture(autouse=True)
def _no_kept_templates() -> None:
    """Each test starts with none of the templates the process keeps."""
    links_module._templates.clear()


@pytest.mark.parametrize(
    "extra",
    [{}, {"secure": True}, {"HTTP_HOST": "api.example.com:8443"}],
    ids=["http", "https", "another host"],
)
def test_every_url_is_what_build_absolute_uri_and_reverse_make(extra, settings) -> None:
    settings.ALLOWED_HOSTS = ["testserver", "api.example.com"]
    request = _request(**extra)
    links = Links(request)

    for name, kwargs in ROUTES:
        for value in (uuid.uuid4(), uuid.uuid4()):  # the second one comes from the template
            arguments = {k: value if isinstance(v, uuid.UUID) else v for k, v in kwargs.items()}
            expected = request.build_absolute_uri(reverse(name, kwargs=arguments))
            assert links.url(name, **arguments) == expected


def test_a_script_prefix_is_kept() -> None:
    set_script_prefix("/control-plane/")
    try:
        request = _request()
        expected = request.build_absolute_uri(reverse("api:queues", kwargs=ROUTES[2][1]))
        assert Links(request).url("api:queues", **ROUTES[2][1]) == expected
        assert "/control-plane/v2/" in expected
    finally:
        clear_script_prefix()


@pytest.fixture
def reversed_(monkeypatch) -> list[str]:
    """The route names ``controlplane.api.links`` reverses, in order."""
    names: list[str] = []
    real = links_module.reverse

    def counting(name: str, **kwargs: Any) -> str:
        names.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(links_module, "reverse", counting)
    return names


def test_each_route_is_reversed_once_per_request_and_text_arguments_key_it(
    reversed_: list[str],
) -> None:
    links = Links(_request())
    for _ in range(3):
        links.url("api:cluster", org_slug="acme", cluster_id=uuid.uuid4())
    links.url("api:cluster", org_slug="other", cluster_id=uuid.uuid4())

    assert reversed_ == ["api:cluster", "api:cluster"]  # once for acme, once for other


def test_the_process_keeps_each_template_for_the_next_requests(
    reversed_: list[str], settings
) -> None:
    settings.ALLOWED_HOSTS = ["testserver", "api.example.com"]
    arguments = {"org_slug": "acme", "cluster_id": CLUSTER}
    urls = [Links(_request()).url("api:cluster", **arguments) for _ in range(3)]
    other_host = Links(_request(HTTP_HOST="api.example.com")).url("api:cluster", **arguments)
    https = Links(_request(secure=True)).url("api:cluster", **arguments)

    assert urls == [f"http://testserver/v2/organizations/acme/clusters/{CLUSTER}"] * 3
    assert other_host == f"http://api.example.com/v2/organizations/acme/clusters/{CLUSTER}"
    assert https == f"https://testserver/v2/organizations/acme/clusters/{CLUSTER}"
    assert reversed_ == ["api:cluster"] * 3  # once for each scheme and host


def test_kept_templates_are_forgotten_past_the_limit(monkeypatch) -> None:
    monkeypatch.setattr(links_module, "MAX_TEMPLATES", 2)
    for slug in ("a", "b", "c"):
        Links(_request()).url("api:organization", org_slug=slug)

    assert len(links_module._templates) == 1


def _view(request: Any, **kwargs: Any) -> HttpResponse:
    return HttpResponse()


urlpatterns = [
    path("numbers/<int:number>", _view, name="number"),
    path("uuids/<uuid:key>", _view, name="uuid"),
    path("twice/<str:key>/~key~", _view, name="twice"),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("name", "value"),
    [("number", 7), ("uuid", CLUSTER), ("twice", 5)],
    ids=["a converter refusing the placeholder", "a UUID converter", "placeholder text in it"],
)
def test_a_route_that_cannot_be_templated_is_reversed_each_time(name, value) -> None:
    argument = {"number": "number", "uuid": "key", "twice": "key"}[name]
    request = _request()
    links = Links(request)

    for _ in range(2):
        expected = request.build_absolute_uri(reverse(name, kwargs={argument: value}))
        assert links.url(name, **{argument: value}) == expected
