"""Every response that carries a secret says ``Cache-Control: no-store``: the agent token the
REST API creates, and the console pages that show a secret once. Over HTTP, against the running
service."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import pytest
import requests
from django.contrib.auth.models import User
from django.test import Client

from clusters.models import Cluster, Organization
from tests.api.conftest import Api

SECRET_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _not_stored(headers: Mapping[str, str]) -> bool:
    """``no-store`` among the Cache-Control directives (the console adds others), and the
    HTTP/1.0 ``Pragma: no-cache``."""
    directives = {d.strip() for d in headers.get("Cache-Control", "").split(",")}
    return "no-store" in directives and headers.get("Pragma") == "no-cache"


def test_the_agent_token_create_response_is_not_stored(api: Api, cluster: Cluster) -> None:
    response = api.post(f"/clusters/{cluster.pk}/tokens", {"description": "ci"})

    assert response.status_code == 201
    assert response.json()["token"].startswith("bkct_")
    assert {name: response[name] for name in SECRET_HEADERS} == SECRET_HEADERS


def test_over_http_the_agent_token_create_response_is_not_stored(
    live_server, api: Api, cluster: Cluster
) -> None:
    url = f"{live_server.url}{api.base}/clusters/{cluster.pk}/tokens"
    headers = {"Authorization": f"Bearer {api.secret}"}

    created = requests.post(url, json={"description": "ci"}, headers=headers, timeout=10)
    listed = requests.get(url, headers=headers, timeout=10)

    assert created.status_code == 201
    assert created.json()["token"].startswith("bkct_")
    assert {name: created.headers.get(name) for name in SECRET_HEADERS} == SECRET_HEADERS
    assert listed.status_code == 200
    assert "token" not in listed.json()[0]


def _console(live_server, client: Client) -> requests.Session:
    """A session logged in to the console at the live server as a superuser."""
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    return session


def _add(session: requests.Session, url: str, form: dict[str, object]) -> requests.Response:
    """POST the console's add form at ``url`` as a browser does (with its CSRF token)."""
    page = session.get(url, timeout=10)
    assert page.status_code == 200, page.text[:500]
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match is not None
    return session.post(
        url, data={**form, "csrfmiddlewaretoken": match.group(1)}, headers={"Referer": url},
        timeout=10,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("model", "form", "secret_id"),
    [
        (
            "clusteragenttoken",
            lambda org, user: {"cluster": Cluster.objects.create(organization=org, name="c").pk,
                               "description": "agents", "expires_at_0": "", "expires_at_1": ""},
            "agent-token-secret",
        ),
        (
            "apitoken",
            lambda org, user: {"user": user.pk, "organization": org.pk, "description": "ci",
                               "scopes": ["read_clusters"]},
            "api-token-secret",
        ),
        (
            "webhooksecret",
            lambda org, user: {"organization": org.pk, "description": "platform"},
            "webhook-secret",
        ),
    ],
)  # fmt: skip
def test_over_http_a_console_page_that_shows_a_secret_is_not_stored(
    live_server,
    client: Client,
    model: str,
    form: Callable[[Organization, User], dict[str, object]],
    secret_id: str,
) -> None:
    session = _console(live_server, client)
    organization = Organization.objects.create(slug="acme", name="Acme")
    url = f"{live_server.url}/admin/clusters/{model}/add/"

    response = _add(session, url, form(organization, User.objects.get()))

    assert response.status_code == 200
    assert f'<pre id="{secret_id}"' in response.text
    assert _not_stored(response.headers), response.headers
