"""The registry's token endpoint, ``/registry/token``, as docker, skopeo and buildah call it."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from clusters import services
from clusters.models import Cluster, ClusterAgentToken, Organization
from registries.models import Registry, RegistryEvent, State
from tests.registries.factories import RegistryFactory
from tests.support.registry_tokens import access_claims

pytestmark = pytest.mark.django_db

URL = "/registry/token"
SERVICE = "hosted-registry"
BAD_CREDENTIALS = "Invalid, expired or revoked agent token."
FORM = "application/x-www-form-urlencoded"
#: What an agent token gets on a repository of its namespace, whatever it asked (issue 13).
ALL = ["pull", "push", "delete"]


@dataclass
class Agent:
    """A cluster, one of its agent tokens and the token's secret."""

    cluster: Cluster
    token: ClusterAgentToken
    secret: str

    @property
    def namespace(self) -> str:
        return f"acme/{self.cluster.pk.hex[:12]}"

    @property
    def subject(self) -> str:
        return f"cluster:{self.cluster.pk}:agent-token:{self.token.pk}"


@pytest.fixture
def organization() -> Organization:
    return services.organization_create(slug="acme", name="Acme")


def make_agent(
    organization: Organization, name: str, state: str | None = State.READY, **token: Any
) -> Agent:
    """A cluster with an agent token, and a registry in ``state`` (None: no registry)."""
    cluster = services.cluster_create(organization=organization, name=name)
    token_row, secret = services.agent_token_create(cluster=cluster, description="agents", **token)
    if state is not None:
        RegistryFactory(cluster=cluster, state=state)
    return Agent(cluster=cluster, token=token_row, secret=secret)


@pytest.fixture
def agent(organization: Organization) -> Agent:
    return make_agent(organization, "Open Source")


@pytest.fixture
def other_agent(organization: Organization) -> Agent:
    return make_agent(organization, "Private")


def basic(secret: str, user: str = "any-user") -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {credentials}"}


def error(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "errors": [{"code": code, "message": message}]}


def post(client, **form: str):
    return client.post(URL, data=urlencode(form), content_type=FORM)


# --- GET with HTTP Basic credentials --------------------------------------------------------


def test_an_agent_token_gets_its_namespace_and_nothing_else(
    client, agent: Agent, other_agent: Agent
) -> None:
    response = client.get(
        URL,
        {
            "service": SERVICE,
            "scope": [
                f"repository:{agent.namespace}/base:pull,push",
                f"repository:{other_agent.namespace}/base:pull",
                "registry:catalog:*",
            ],
        },
        **basic(agent.secret),
    )

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    body = response.json()
    assert sorted(body) == ["access_token", "expires_in", "issued_at", "token"]
    assert body["access_token"] == body["token"]
    assert body["expires_in"] == django_settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS
    token = access_claims(body["token"])
    assert token["access"] == [
        {"type": "repository", "name": f"{agent.namespace}/base", "actions": ALL}
    ]
    assert token["sub"] == agent.subject
    assert token["aud"] == SERVICE


def test_asking_only_to_pull_in_the_namespace_grants_push_and_delete_too_as_oras_needs(
    client, agent: Agent, other_agent: Agent
) -> None:
    """oras (PyPI), the oras CLI and older Helm ask for ``pull`` and push with that token."""
    response = client.get(
        URL,
        {
            "service": SERVICE,
            "scope": [
                f"repository:{agent.namespace}/artifact:pull",
                f"repository:{other_agent.namespace}/artifact:pull",
            ],
        },
        **basic(agent.secret),
    )

    assert response.status_code == 200
    body = response.json()
    assert access_claims(body["token"])["access"] == [
        {"type": "repository", "name": f"{agent.namespace}/artifact", "actions": ALL}
    ]
    # It asked to read only: the token keeps the short lifetime of a pull token.
    assert body["expires_in"] == django_settings.REGISTRY_TOKEN_PULL_TTL_SECONDS


def test_scopes_in_one_space_separated_parameter_are_each_granted(client, agent: Agent) -> None:
    response = client.get(
        URL,
        {
            "service": SERVICE,
            "scope": f"repository:{agent.namespace}/a:pull repository:{agent.namespace}/b:push",
        },
        **basic(agent.secret),
    )

    assert response.status_code == 200
    assert access_claims(response.json()["token"])["access"] == [
        {"type": "repository", "name": f"{agent.namespace}/a", "actions": ALL},
        {"type": "repository", "name": f"{agent.namespace}/b", "actions": ALL},
    ]


def test_without_credentials_the_token_grants_nothing(client, agent: Agent) -> None:
    response = client.get(
        URL, {"service": SERVICE, "scope": f"repository:{agent.namespace}/base:pull"}
    )

    assert response.status_code == 200
    token = access_claims(response.json()["token"])
    assert token["access"] == []
    assert token["sub"] == ""
    assert response.json()["expires_in"] == django_settings.REGISTRY_TOKEN_PULL_TTL_SECONDS


def test_a_wrong_secret_is_refused(client, agent: Agent) -> None:
    response = client.get(URL, {"service": SERVICE}, **basic(agent.secret + "x"))

    assert response.status_code == 401
    assert response.json() == error(BAD_CREDENTIALS, "UNAUTHORIZED")
    assert response["WWW-Authenticate"] == 'Basic realm="registry token"'


def test_a_revoked_agent_token_is_refused(client, agent: Agent) -> None:
    services.agent_token_revoke(token=agent.token)

    response = client.get(
        URL,
        {"service": SERVICE, "scope": f"repository:{agent.namespace}/base:pull"},
        **basic(agent.secret),
    )

    assert response.status_code == 401
    assert response.json() == error(BAD_CREDENTIALS, "UNAUTHORIZED")
    assert response["WWW-Authenticate"] == 'Basic realm="registry token"'


def test_an_expired_agent_token_is_refused(client, organization: Organization) -> None:
    agent = make_agent(organization, "Expiring", expires_at=timezone.now() + timedelta(hours=1))
    ClusterAgentToken.objects.filter(pk=agent.token.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = client.get(URL, {"service": SERVICE}, **basic(agent.secret))

    assert response.status_code == 401
    assert response.json() == error(BAD_CREDENTIALS, "UNAUTHORIZED")
    assert response["WWW-Authenticate"] == 'Basic realm="registry token"'


def test_an_agent_token_that_has_not_expired_yet_is_accepted(
    client, organization: Organization
) -> None:
    agent = make_agent(organization, "Expiring", expires_at=timezone.now() + timedelta(hours=1))

    response = client.get(
        URL,
        {"service": SERVICE, "scope": f"repository:{agent.namespace}:pull"},
        **basic(agent.secret),
    )

    assert response.status_code == 200
    assert access_claims(response.json()["token"])["access"] == [
        {"type": "repository", "name": agent.namespace, "actions": ALL}
    ]


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (
            "Bearer xyz",
            "Send HTTP Basic credentials: any user name, and a cluster agent token as password.",
        ),
        ("Basic !!!not-base64!!!", "Malformed HTTP Basic credentials."),
        (
            "Basic " + base64.b64encode(b"user:\xff\xfe").decode(),
            "Malformed HTTP Basic credentials.",
        ),
        ("Basic " + base64.b64encode(b"no-colon").decode(), BAD_CREDENTIALS),
        ("Basic", BAD_CREDENTIALS),
    ],
    ids=["bearer", "not base64", "not utf-8", "no password", "nothing"],
)
def test_credentials_that_are_not_basic_or_malformed_are_refused(
    client, agent: Agent, authorization: str, message: str
) -> None:
    response = client.get(URL, {"service": SERVICE}, HTTP_AUTHORIZATION=authorization)

    assert response.status_code == 401
    assert response.json() == error(message, "UNAUTHORIZED")
    assert response["WWW-Authenticate"] == 'Basic realm="registry token"'


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "service is required (the registry's challenge names it)."),
        ({"service": ""}, "service is required (the registry's challenge names it)."),
        (
            {"service": "other"},
            "This endpoint issues tokens for the service 'hosted-registry' and the other "
            "registry backends' services, not 'other'.",
        ),
    ],
    ids=["missing", "empty", "another service"],
)
def test_a_token_for_another_service_is_refused(
    client, agent: Agent, query: dict[str, str], message: str
) -> None:
    response = client.get(URL, query, **basic(agent.secret))

    assert response.status_code == 400
    assert response.json() == error(message, "DENIED")


@pytest.mark.parametrize(
    "state", [State.PENDING, State.PROVISIONING, State.FAILED, State.DEPROVISIONING, None]
)
def test_a_cluster_without_a_ready_registry_gets_an_empty_grant(
    client, organization: Organization, state: str | None
) -> None:
    agent = make_agent(organization, "Not ready", state=state)

    response = client.get(
        URL,
        {"service": SERVICE, "scope": f"repository:{agent.namespace}/base:pull,push"},
        **basic(agent.secret),
    )

    assert response.status_code == 200
    token = access_claims(response.json()["token"])
    assert token["access"] == []
    assert token["sub"] == agent.subject


def test_without_a_signing_key_the_service_is_unavailable(
    client, agent: Agent, settings, tmp_path: Path, no_signing_keys
) -> None:
    response = client.get(URL, {"service": SERVICE}, **basic(agent.secret))

    assert response.status_code == 503
    message = (
        "The registry token service has no signing key: an operator must run "
        "`python manage.py registry_keys init`."
    )
    assert response.json() == error(message, "UNAVAILABLE")  # the details in the log only


# --- offline tokens and the OAuth2 form -----------------------------------------------------


def test_get_with_offline_token_returns_a_refresh_token(client, agent: Agent) -> None:
    response = client.get(URL, {"service": SERVICE, "offline_token": "true"}, **basic(agent.secret))

    assert response.status_code == 200
    assert sorted(response.json()) == [
        "access_token",
        "expires_in",
        "issued_at",
        "refresh_token",
        "token",
    ]


def test_an_anonymous_get_with_offline_token_gets_no_refresh_token(client) -> None:
    response = client.get(URL, {"service": SERVICE, "offline_token": "true"})

    assert response.status_code == 200
    assert "refresh_token" not in response.json()


def test_the_password_grant_issues_a_token_for_the_scopes(client, agent: Agent) -> None:
    scope = f"repository:{agent.namespace}/a:pull repository:{agent.namespace}/b:pull,push"

    response = post(
        client,
        grant_type="password",
        username="any-user",
        password=agent.secret,
        service=SERVICE,
        scope=scope,
    )

    assert response.status_code == 200
    body = response.json()
    assert sorted(body) == ["access_token", "expires_in", "issued_at", "token"]
    assert body["access_token"] == body["token"]
    assert access_claims(body["token"])["access"] == [
        {"type": "repository", "name": f"{agent.namespace}/a", "actions": ALL},
        {"type": "repository", "name": f"{agent.namespace}/b", "actions": ALL},
    ]


def test_the_password_grant_with_a_wrong_password_is_refused(client, agent: Agent) -> None:
    response = post(client, grant_type="password", username="u", password="wrong", service=SERVICE)

    assert response.status_code == 401
    assert response.json() == error(BAD_CREDENTIALS, "UNAUTHORIZED")


def refresh_token_for(client, agent: Agent) -> str:
    response = post(
        client,
        grant_type="password",
        username="any-user",
        password=agent.secret,
        service=SERVICE,
        access_type="offline",
        client_id="docker",
    )
    assert response.status_code == 200
    return response.json()["refresh_token"]


def test_the_refresh_token_grant_issues_a_new_token_for_the_scope(client, agent: Agent) -> None:
    refresh_token = refresh_token_for(client, agent)

    response = post(
        client,
        grant_type="refresh_token",
        refresh_token=refresh_token,
        service=SERVICE,
        scope=f"repository:{agent.namespace}/base:pull,push",
    )

    assert response.status_code == 200
    body = response.json()
    assert sorted(body) == ["access_token", "expires_in", "issued_at", "refresh_token", "token"]
    token = access_claims(body["token"])
    assert token["access"] == [
        {"type": "repository", "name": f"{agent.namespace}/base", "actions": ALL}
    ]
    assert token["sub"] == agent.subject


def test_the_refresh_token_grant_stops_working_when_the_agent_token_is_revoked(
    client, agent: Agent
) -> None:
    refresh_token = refresh_token_for(client, agent)
    services.agent_token_revoke(token=agent.token)

    response = post(
        client, grant_type="refresh_token", refresh_token=refresh_token, service=SERVICE
    )

    assert response.status_code == 401
    assert response.json() == error(BAD_CREDENTIALS, "UNAUTHORIZED")


def test_the_refresh_token_grant_follows_the_registry_state(client, agent: Agent) -> None:
    refresh_token = refresh_token_for(client, agent)
    Registry.objects.filter(cluster=agent.cluster).update(
        state=State.DEPROVISIONING, deprovision_requested_at=timezone.now()
    )

    response = post(
        client,
        grant_type="refresh_token",
        refresh_token=refresh_token,
        service=SERVICE,
        scope=f"repository:{agent.namespace}/base:pull",
    )

    assert response.status_code == 200
    assert access_claims(response.json()["token"])["access"] == []


def test_an_access_token_is_refused_as_a_refresh_token(client, agent: Agent) -> None:
    access_token = client.get(URL, {"service": SERVICE}, **basic(agent.secret)).json()["token"]

    response = post(client, grant_type="refresh_token", refresh_token=access_token, service=SERVICE)

    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert response.json()["message"].startswith("The refresh token is not valid")


def test_a_missing_refresh_token_is_refused(client) -> None:
    response = post(client, grant_type="refresh_token", service=SERVICE)

    assert response.status_code == 401
    assert response.json() == error("The refresh token is malformed.", "UNAUTHORIZED")


@pytest.mark.parametrize("grant_type", [None, "client_credentials", ""])
def test_other_grant_types_are_refused(client, agent: Agent, grant_type: str | None) -> None:
    form = {"service": SERVICE, "username": "u", "password": agent.secret}
    if grant_type is not None:
        form["grant_type"] = grant_type

    response = post(client, **form)

    assert response.status_code == 400
    assert response.json() == error(
        "grant_type must be 'password' or 'refresh_token'; "
        "or GET this endpoint with HTTP Basic credentials.",
        "DENIED",
    )


# --- side effects ---------------------------------------------------------------------------


def test_the_token_endpoint_writes_nothing(client, agent: Agent) -> None:
    def counts() -> dict[str, int]:
        return {
            model.__name__: model.objects.count()
            for model in (Organization, Cluster, ClusterAgentToken, Registry, RegistryEvent)
        }

    before = counts()
    token_before = ClusterAgentToken.objects.values().get(pk=agent.token.pk)
    registry_before = Registry.objects.values().get(cluster=agent.cluster)

    refresh_token = refresh_token_for(client, agent)
    client.get(URL, {"service": SERVICE, "scope": "repository:x:pull"}, **basic(agent.secret))
    client.get(URL, {"service": SERVICE}, **basic("wrong"))
    post(client, grant_type="refresh_token", refresh_token=refresh_token, service=SERVICE)

    assert counts() == before
    assert ClusterAgentToken.objects.values().get(pk=agent.token.pk) == token_before
    assert Registry.objects.values().get(cluster=agent.cluster) == registry_before


def test_a_request_for_too_many_scopes_is_refused(client, agent: Agent) -> None:
    scopes = " ".join(f"repository:{agent.namespace}/r{i}:pull" for i in range(51))

    response = client.get(URL, {"service": SERVICE, "scope": scopes}, **basic(agent.secret))

    assert response.status_code == 400
    message = "Ask for at most 50 scopes at once; this request has 51."
    assert response.json() == error(message, "DENIED")
