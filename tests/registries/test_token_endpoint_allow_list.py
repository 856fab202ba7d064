"""The registry token endpoint applies the agent token's IP allow-list (``allowed_ip_addresses``),
over HTTP against the running service: the agent token as the Basic password, its refresh token,
and a job credential made from it are refused from outside the list (403, Distribution's
``DENIED``, the address named), and served from inside it."""

from __future__ import annotations

import pytest
import requests

from clusters import services
from clusters.ip_allow_lists import refusal
from tests.registries.test_token_endpoint import (
    Agent,
    make_agent,
    organization,  # noqa: F401 - a fixture
)

SERVICE = "hosted-registry"


@pytest.fixture
def agent(organization) -> Agent:  # noqa: F811 - the imported fixture
    return make_agent(organization, "Open Source")


def narrow(agent: Agent, allowed: str) -> None:
    services.agent_token_update(token=agent.token, allowed_ip_addresses=allowed)


@pytest.mark.django_db(transaction=True)
def test_over_http_the_token_endpoint_refuses_an_agent_token_outside_its_list(
    live_server, agent
) -> None:
    url = f"{live_server.url}/registry/token"
    scope = f"repository:{agent.namespace}/base:pull,push"

    def token(**extra: str) -> requests.Response:
        params = {"service": SERVICE, "scope": scope, **extra}
        return requests.get(url, params=params, auth=("any", agent.secret), timeout=10)

    offline = token(offline_token="true")
    assert offline.status_code == 200, offline.text
    refresh_token = offline.json()["refresh_token"]

    narrow(agent, "203.0.113.0/24")
    refused = token()
    refused_refresh = requests.post(
        url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "service": SERVICE},
        timeout=10,
    )

    message = refusal("127.0.0.1")
    expected = {"message": message, "errors": [{"code": "DENIED", "message": message}]}
    assert (refused.status_code, refused.json()) == (403, expected)
    assert (refused_refresh.status_code, refused_refresh.json()) == (403, expected)

    narrow(agent, "203.0.113.0/24 127.0.0.0/8")
    served = token()
    assert served.status_code == 200
    assert served.json()["token"]


@pytest.mark.django_db(transaction=True)
def test_over_http_a_job_credential_follows_its_agent_tokens_list(live_server, agent) -> None:
    created = requests.post(
        f"{live_server.url}/v3/agent/registry-credentials",
        json={},
        headers={"Authorization": f"Token {agent.secret}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    params = {"service": SERVICE, "scope": f"repository:{agent.namespace}/base:pull"}

    narrow(agent, "203.0.113.0/24")
    refused = requests.get(
        f"{live_server.url}/registry/token", params=params, auth=("job", secret), timeout=10
    )
    refused_create = requests.post(
        f"{live_server.url}/v3/agent/registry-credentials",
        json={},
        headers={"Authorization": f"Token {agent.secret}"},
        timeout=10,
    )

    assert refused.status_code == 403
    assert refused.json()["message"] == refusal("127.0.0.1")
    assert refused_create.status_code == 403
    assert refused_create.json() == {"message": refusal("127.0.0.1")}
