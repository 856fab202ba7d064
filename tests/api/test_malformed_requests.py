"""Every API error is JSON, including requests Django or Python's ``json`` refuse before a view
decides anything: more query parameters or form fields than ``DATA_UPLOAD_MAX_NUMBER_FIELDS``
(Django's ``TooManyFieldsSent``: a 400 HTML page, or the debug page with DEBUG on) and JSON
nested deeper than the stack (``RecursionError``: a 500). On every endpoint the URL
configuration routes (the REST API, the agent endpoint, the token endpoint, the webhook), with
DEBUG on and off: a JSON 4xx with a ``message`` that says what to do.

The endpoints come from the URL configuration, so a new one is covered without editing a list;
the admin console and the Swagger page are HTML and keep Django's pages.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import Client
from rest_framework import parsers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from clusters import services, webhooks
from clusters.api.base import answered_methods
from clusters.checks import routes
from controlplane.api.parsers import MAX_JSON_DEPTH
from tests.api.conftest import Api
from tests.api.test_tenancy import ENDPOINTS

pytestmark = pytest.mark.django_db

TOO_MANY_FIELDS = (
    f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query parameters or "
    f"form fields; send at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}."
)
NESTED = (
    f"JSON parse error - it is nested more than {MAX_JSON_DEPTH} levels deep; send at most "
    f"{MAX_JSON_DEPTH} levels"
)
#: One more query parameter than Django takes.
MANY_PARAMETERS = "&".join(f"p{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
#: Routes that answer HTML for people, not the API: they keep Django's pages.
HTML_ROUTES = ("admin/", "v2/docs/")


def nested(depth: int) -> bytes:
    """A JSON object nested ``depth`` levels deep (arrays inside the outer object)."""
    return b'{"name": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def _fill(route: str) -> str:
    """A concrete path for ``route``: any value does, the refusal comes first (an id named
    after its parameter, so that test ids stay the same from run to run)."""
    return "/" + re.sub(
        r"<(?:\w+:)?(\w+)>",
        lambda m: "acme" if m[1] == "org_slug" else str(uuid.uuid5(uuid.NAMESPACE_URL, m[1])),
        route,
    )


def api_routes() -> list[tuple[str, str]]:
    """Every (method, path) the URL configuration routes to a DRF view, outside HTML_ROUTES."""
    found = []
    for route, view in routes():
        view_class = getattr(view, "view_class", None)
        if route.startswith(HTML_ROUTES) or not (
            isinstance(view_class, type) and issubclass(view_class, APIView)
        ):
            continue
        methods = [m.lower() for m in answered_methods(view_class) if m != "HEAD"]
        found.extend((method, _fill(route)) for method in methods)
    return found


API_ROUTES = api_routes()


@pytest.fixture(params=[False, True], ids=["DEBUG off", "DEBUG on"])
def debug(request: pytest.FixtureRequest, settings) -> bool:
    settings.DEBUG = request.param
    return bool(request.param)


def assert_json_400(response: Any, message: str) -> None:
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json()["message"] == message


def test_the_routes_cover_every_kind_of_endpoint() -> None:
    paths = {path for _, path in API_ROUTES}
    assert {"/v3/agent/environment", "/registry/token", "/v2/webhooks/buildkite/acme"} <= paths
    assert any(path.startswith("/v2/organizations/acme/clusters") for path in paths)
    assert ("post", "/v2/organizations/acme/clusters") in API_ROUTES


@pytest.mark.parametrize(("method", "path"), API_ROUTES, ids=lambda x: str(x))
def test_too_many_query_parameters_are_a_json_400_on_every_endpoint(
    debug: bool, method: str, path: str
) -> None:
    client = Client(raise_request_exception=False)

    response = getattr(client, method)(f"{path}?{MANY_PARAMETERS}")

    assert_json_400(response, TOO_MANY_FIELDS)


def test_too_many_form_fields_are_a_json_400_at_the_token_endpoint(debug: bool) -> None:
    client = Client(raise_request_exception=False)

    response = client.post(
        "/registry/token", MANY_PARAMETERS, content_type="application/x-www-form-urlencoded"
    )

    assert_json_400(response, TOO_MANY_FIELDS)


def test_an_unknown_path_or_the_root_with_too_many_parameters_is_json(settings) -> None:
    settings.DEBUG = False  # with DEBUG on, an unknown path is Django's debug page
    client = Client(raise_request_exception=False)
    assert client.get(f"/v2/nothing?{MANY_PARAMETERS}").json() == {"message": "Not Found"}
    assert client.get(f"/?{MANY_PARAMETERS}").json()["message"] == "🛠"


@pytest.fixture
def acme(api: Api) -> dict[str, str]:
    """acme's cluster with a hosted queue and an agent token: each write would succeed."""
    cluster = services.cluster_create(organization=api.organization, name="Open Source")
    queue = services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    token, _ = services.agent_token_create(cluster=cluster, description="agents")
    return {"cluster": str(cluster.pk), "queue": str(queue.pk), "token": str(token.pk)}


#: The writes that read a body (the others never parse one).
WRITES = [e for e in ENDPOINTS if e.method in ("post", "put", "patch") and e.body is not None]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 100_000])
@pytest.mark.parametrize("endpoint", WRITES, ids=str)
def test_json_nested_too_deeply_is_a_json_400_on_every_rest_write(
    debug: bool, api: Api, acme: dict[str, str], endpoint: Any, depth: int
) -> None:
    path = f"{api.base}{endpoint.path.format(**acme)}"
    client = Client(raise_request_exception=False)

    response = getattr(client, endpoint.method)(
        path, nested(depth), content_type="application/json", **api._headers()
    )

    assert_json_400(response, NESTED)


def test_json_as_deep_as_the_limit_is_read(api: Api) -> None:
    response = api.client.post(
        f"{api.base}/clusters", nested(MAX_JSON_DEPTH), content_type="application/json",
        **api._headers(),
    )  # fmt: skip
    assert response.status_code == 422  # read, then refused by the serializer: name is a string
    assert response.json()["message"].startswith("Validation failed: name ")


@pytest.mark.parametrize("body", [b'{"name": NaN}', b'{"name": 1e400}'])
def test_what_python_reads_but_json_is_not_is_a_json_400(api: Api, body: bytes) -> None:
    response = api.client.post(
        f"{api.base}/clusters", body, content_type="application/json", **api._headers()
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("JSON parse error - ")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 100_000])
def test_the_webhook_refuses_deep_json_with_the_same_reader(debug: bool, depth: int) -> None:
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = webhooks.webhook_secret_create(organization=organization, description="platform")
    body = nested(depth).replace(b"{", b'{"event": "ping", ', 1)
    client = Client(raise_request_exception=False)

    response = client.post(
        "/v2/webhooks/buildkite/acme", body, content_type="application/json",
        headers={webhooks.SIGNATURE_HEADER: webhooks.sign(secret, int(time.time()), body),
                 webhooks.EVENT_HEADER: "ping", webhooks.DELIVERY_HEADER: "d-1"},
    )  # fmt: skip

    assert_json_400(
        response, "The body is not JSON: " + NESTED.removeprefix("JSON parse error - ") + "."
    )


class ExplicitParser(APIView):
    """A view that names DRF's own JSON parser rather than the project's default."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    parser_classes = [parsers.JSONParser]

    def post(self, request: Request) -> Response:
        return Response({"keys": sorted(request.data)})


def test_deep_json_read_by_any_parser_is_a_json_400_not_a_500() -> None:
    request = APIRequestFactory().post(
        "/", b"[" * 100_000 + b"]" * 100_000, content_type="application/json"
    )
    response = ExplicitParser.as_view()(request)
    assert response.status_code == 400
    assert response.data == {"message": NESTED}


def test_a_recursion_error_that_is_not_the_parsers_stays_a_500() -> None:
    class Recursing(ExplicitParser):
        def post(self, request: Request) -> Response:
            raise RecursionError("a bug")

    with pytest.raises(RecursionError):
        Recursing.as_view()(APIRequestFactory().post("/", {}, format="json"))


# --- over HTTP -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v2/organizations/acme/clusters"),
        ("get", "/v3/agent/environment"),
        ("get", "/registry/token"),
        ("post", "/v2/webhooks/buildkite/acme"),
        ("get", "/v2/schema/"),
    ],
)
def test_over_http_too_many_parameters_are_a_json_400(
    live_server, debug: bool, method: str, path: str
) -> None:
    response = requests.request(method, f"{live_server.url}{path}?{MANY_PARAMETERS}", timeout=10)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["message"] == TOO_MANY_FIELDS


def test_over_http_too_many_form_fields_and_deep_json_are_a_json_400(
    live_server, debug: bool, api: Api
) -> None:
    form = requests.post(
        f"{live_server.url}/registry/token", data=MANY_PARAMETERS,
        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10,
    )  # fmt: skip
    deep = requests.post(
        f"{live_server.url}{api.base}/clusters", data=nested(100_000),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api.secret}"},
        timeout=10,
    )  # fmt: skip

    assert (form.status_code, form.headers["Content-Type"]) == (400, "application/json")
    assert form.json()["message"] == TOO_MANY_FIELDS
    assert (deep.status_code, deep.headers["Content-Type"]) == (400, "application/json")
    assert deep.json()["message"] == NESTED
    assert json.loads(deep.content) == {"message": NESTED}


def test_a_request_refused_before_any_view_is_json_too(settings) -> None:
    settings.DEBUG = False  # Django's 400 handler (with DEBUG on, its debug page)
    response = Client(raise_request_exception=False).get("/", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert response.json() == {
        "message": "Send the request to a host name this service answers to (the Host header)."
    }
