"""Job-scoped registry credentials (issue 13, item 1): the agent hook exchanges the cluster agent
token for one at ``/v3/agent/registry-credentials``, the token endpoint accepts it as the HTTP
Basic password, and it stops working when revoked, expired, or when its agent token is revoked."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import jwt
import pytest
import requests
from django.conf import settings
from django.utils import timezone

from clusters import services
from clusters.models import ClusterAgentToken
from registries.models import JobCredential, State
from tests.registries.test_token_endpoint import (
    Agent,
    basic,
    make_agent,
    organization,  # noqa: F401 - a fixture
)
from tests.support.registry_tokens import access_claims

pytestmark = pytest.mark.django_db

CREATE = "/v3/agent/registry-credentials"
CURRENT = "/v3/agent/registry-credentials/current"
TOKEN = "/registry/token"
SERVICE = "hosted-registry"
ALL = ["pull", "push", "delete"]
BAD_JOB_CREDENTIAL = "Invalid, expired or revoked job credential (or its agent token was revoked)."


@pytest.fixture
def agent(organization) -> Agent:  # noqa: F811 - the imported fixture
    return make_agent(organization, "Open Source")


@pytest.fixture
def other_agent(organization) -> Agent:  # noqa: F811
    return make_agent(organization, "Private")


def create(client, secret: str, **body: str):
    return client.post(
        CREATE, body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {secret}"
    )


def credential_of(client, agent: Agent, job_id: str = "") -> dict[str, str]:
    response = create(client, agent.secret, **({"job_id": job_id} if job_id else {}))
    assert response.status_code == 201, response.content
    return response.json()


def token_for(client, secret: str, scope: str, **extra: str):
    return client.get(TOKEN, {"service": SERVICE, "scope": scope}, **basic(secret), **extra)


def revoke(client, secret: str):
    return client.delete(CURRENT, HTTP_AUTHORIZATION=f"Token {secret}")


# --- creating one ---------------------------------------------------------------------------


def test_the_agent_token_buys_a_credential_shown_once_and_stored_as_a_hash(client, agent) -> None:
    response = create(client, agent.secret, job_id="01890a5d-ac96-4e2b-8f5e-0d3a7c1b2e4f")

    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"id", "username", "secret", "expires_at", "job_id", "registry_host"}
    assert body["username"] == "buildkite-job"
    assert body["secret"].startswith("bkrc_")
    assert len(body["secret"]) == 5 + 43
    assert body["job_id"] == "01890a5d-ac96-4e2b-8f5e-0d3a7c1b2e4f"
    assert body["registry_host"] == settings.REGISTRY_PUBLIC_HOST
    row = JobCredential.objects.get(pk=body["id"])
    assert row.expires_at - row.created_at == timedelta(hours=8)  # the default lifetime
    assert body["expires_at"] == row.expires_at.isoformat().replace("+00:00", "Z")
    assert row.agent_token == agent.token
    assert row.secret_hash == JobCredential.hash_secret(body["secret"])
    assert body["secret"] not in {row.secret_hash, row.secret_prefix, row.job_id}
    assert row.secret_prefix == body["secret"][:9]


def test_a_credential_never_outlives_its_agent_token(client, organization) -> None:  # noqa: F811
    expires = timezone.now() + timedelta(minutes=30)
    agent = make_agent(organization, "Short", expires_at=expires)
    body = credential_of(client, agent)
    assert JobCredential.objects.get(pk=body["id"]).expires_at == expires


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Token bkct_wrong", 401), ("Basic eDp5", 401)],
)
def test_without_a_valid_agent_token_there_is_no_credential(client, agent, header, status) -> None:
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.post(CREATE, {}, content_type="application/json", **extra)
    assert response.status_code == status
    assert response["Cache-Control"] == "no-store"
    assert "message" in response.json()
    assert not JobCredential.objects.exists()


def test_a_job_credential_cannot_buy_another(client, agent) -> None:
    body = credential_of(client, agent)
    response = create(client, body["secret"])
    assert response.status_code == 401
    assert JobCredential.objects.count() == 1


@pytest.mark.parametrize("job_id", ["x" * 65, "a b", "../x", "-x"])
def test_a_job_id_that_is_not_one_is_refused(client, agent, job_id: str) -> None:
    response = create(client, agent.secret, job_id=job_id)
    assert response.status_code == 422
    assert response.json()["message"].startswith("Validation failed")


@pytest.mark.parametrize("body", ['["job-1"]', '"job-1"', '{"job_id": 7}'])
def test_a_body_that_is_not_an_object_with_a_string_is_refused(client, agent, body: str) -> None:
    response = client.post(
        CREATE, body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {agent.secret}"
    )
    assert response.status_code in (400, 422)
    assert "message" in response.json()
    assert not JobCredential.objects.exists()


def test_a_revoked_agent_token_gets_no_credential(client, agent) -> None:
    services.agent_token_revoke(token=agent.token)
    assert create(client, agent.secret).status_code == 401


# --- using it at the token endpoint ---------------------------------------------------------


def test_the_token_endpoint_grants_the_credential_its_clusters_namespace_only(
    client, agent, other_agent
) -> None:
    secret = credential_of(client, agent, job_id="job-1")["secret"]
    response = client.get(
        TOKEN,
        {
            "service": SERVICE,
            "scope": [
                f"repository:{agent.namespace}/base:pull,push",
                f"repository:{other_agent.namespace}/base:pull",
                "registry:catalog:*",
            ],
        },
        **basic(secret),
    )
    assert response.status_code == 200, response.content
    claims = access_claims(response.json()["token"])
    assert claims["access"] == [
        {"type": "repository", "name": f"{agent.namespace}/base", "actions": ALL}
    ]
    credential = JobCredential.objects.get()
    assert claims["sub"] == f"{agent.subject}:job-credential:{credential.pk}"


def test_the_oauth2_password_form_takes_it_too(client, agent) -> None:
    secret = credential_of(client, agent)["secret"]
    response = client.post(
        TOKEN,
        data=urlencode(
            {
                "grant_type": "password",
                "username": "buildkite-job",
                "password": secret,
                "service": SERVICE,
                "scope": f"repository:{agent.namespace}/base:pull",
            }
        ),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "how",
    ["revoked", "expired", "agent token revoked", "agent token expired", "cluster deleted"],
)
def test_a_credential_fails_at_its_next_use_once_it_or_its_agent_token_is_gone(
    client, agent, how: str
) -> None:
    secret = credential_of(client, agent)["secret"]
    scope = f"repository:{agent.namespace}/base:pull"
    assert token_for(client, secret, scope).status_code == 200

    credential = JobCredential.objects.get()
    if how == "revoked":
        assert revoke(client, secret).status_code == 204
    elif how == "expired":
        JobCredential.objects.update(expires_at=timezone.now())
    elif how == "agent token revoked":
        services.agent_token_revoke(token=agent.token)
    elif how == "agent token expired":
        ClusterAgentToken.objects.filter(pk=agent.token.pk).update(expires_at=timezone.now())
    else:
        services.cluster_delete(cluster=agent.cluster)
        assert not JobCredential.objects.filter(pk=credential.pk).exists()

    response = token_for(client, secret, scope)
    assert response.status_code == 401
    assert response.json()["message"] == BAD_JOB_CREDENTIAL


def test_a_wrong_job_credential_is_refused_with_its_own_message(client, agent) -> None:
    response = token_for(client, "bkrc_not-a-credential", f"repository:{agent.namespace}/b:pull")
    assert response.status_code == 401
    assert response.json()["message"] == BAD_JOB_CREDENTIAL


def test_a_credential_grants_nothing_while_the_registry_is_not_ready(
    client,
    organization,  # noqa: F811
) -> None:
    agent = make_agent(organization, "Pending", state=State.PENDING)
    secret = credential_of(client, agent)["secret"]
    response = token_for(client, secret, f"repository:{agent.namespace}/base:pull")
    assert response.status_code == 200
    assert access_claims(response.json()["token"])["access"] == []


@pytest.mark.parametrize("how", ["credential revoked", "agent token revoked"])
def test_refresh_tokens_issued_to_a_credential_end_with_it(client, agent, how: str) -> None:
    secret = credential_of(client, agent)["secret"]
    scope = f"repository:{agent.namespace}/base:pull"
    issued = client.get(
        TOKEN, {"service": SERVICE, "scope": scope, "offline_token": "true"}, **basic(secret)
    ).json()
    form = {
        "grant_type": "refresh_token",
        "refresh_token": issued["refresh_token"],
        "service": SERVICE,
        "scope": scope,
    }

    def refresh():
        return client.post(
            TOKEN, data=urlencode(form), content_type="application/x-www-form-urlencoded"
        )

    assert refresh().status_code == 200
    if how == "credential revoked":
        revoke(client, secret)
    else:
        services.agent_token_revoke(token=agent.token)
    response = refresh()
    assert response.status_code == 401
    assert response.json()["message"] == BAD_JOB_CREDENTIAL


@pytest.mark.parametrize("whose", ["the credential's", "the agent token's"])
def test_no_registry_token_outlives_the_credential_it_was_issued_to(
    client,
    organization,  # noqa: F811
    settings,
    whose: str,
) -> None:
    """Revoking a credential cannot recall a JWT already issued (the registry checks only its
    signature and exp): so no token, access or refresh, expires after the credential would."""
    settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS = 3600
    settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS = 86400
    if whose == "the credential's":
        settings.REGISTRY_JOB_CREDENTIAL_TTL_SECONDS = 120
        agent = make_agent(organization, "Short")
    else:
        agent = make_agent(organization, "Short", expires_at=timezone.now() + timedelta(minutes=2))
    body = credential_of(client, agent)
    expires_at = int(JobCredential.objects.get(pk=body["id"]).expires_at.timestamp())
    scope = f"repository:{agent.namespace}/base:push"

    issued = client.get(
        TOKEN,
        {"service": SERVICE, "scope": scope, "offline_token": "true"},
        **basic(body["secret"]),
    ).json()

    access = access_claims(issued["token"])
    assert access["exp"] == expires_at
    assert 110 <= issued["expires_in"] <= 120
    refresh = jwt.decode(
        issued["refresh_token"],
        options={"verify_signature": False},
        audience=settings.REGISTRY_TOKEN_ISSUER,
    )
    assert refresh["exp"] == expires_at


# --- revoking it (the pre-exit hook) --------------------------------------------------------


def test_the_credential_revokes_itself_once_and_again(client, agent) -> None:
    secret = credential_of(client, agent)["secret"]
    first = revoke(client, secret)
    assert first.status_code == 204
    assert first["Cache-Control"] == "no-store"
    revoked_at = JobCredential.objects.get().revoked_at
    assert revoked_at is not None
    assert revoke(client, secret).status_code == 204
    assert JobCredential.objects.get().revoked_at == revoked_at


@pytest.mark.parametrize("header", [None, "Token bkrc_unknown", "Token bkct_an-agent-token"])
def test_revoking_needs_a_known_credential(client, agent, header) -> None:
    credential_of(client, agent)
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.delete(CURRENT, **extra)
    assert response.status_code == 401
    assert "message" in response.json()
    assert JobCredential.objects.get().revoked_at is None


def test_a_credential_revokes_only_itself(client, agent) -> None:
    first = credential_of(client, agent, job_id="one")["secret"]
    second = credential_of(client, agent, job_id="two")["secret"]
    revoke(client, first)
    scope = f"repository:{agent.namespace}/base:pull"
    assert token_for(client, first, scope).status_code == 401
    assert token_for(client, second, scope).status_code == 200


# --- over HTTP, against the running service -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_create_use_and_revoke_over_http(live_server, agent) -> None:
    created = requests.post(
        live_server.url + CREATE,
        json={"job_id": "job-http"},
        headers={"Authorization": f"Token {agent.secret}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    secret = created.json()["secret"]

    def token():
        return requests.get(
            live_server.url + TOKEN,
            params={"service": SERVICE, "scope": f"repository:{agent.namespace}/base:push"},
            auth=("buildkite-job", secret),
            timeout=10,
        )

    assert token().status_code == 200
    services.agent_token_revoke(token=agent.token)
    refused = token()
    assert refused.status_code == 401
    assert refused.json()["message"] == BAD_JOB_CREDENTIAL
    revoked = requests.delete(
        live_server.url + CURRENT, headers={"Authorization": f"Token {secret}"}, timeout=10
    )
    assert revoked.status_code == 204


# --- the agent token's IP allow-list applies to its credentials -----------------------------


def test_the_agent_tokens_ip_allow_list_applies_to_creating_and_using_a_credential(
    client, agent
) -> None:
    secret = credential_of(client, agent)["secret"]
    scope = f"repository:{agent.namespace}/base:pull"
    ClusterAgentToken.objects.filter(pk=agent.token.pk).update(
        allowed_ip_addresses="10.0.0.0/8 192.168.1.0/24"
    )

    refused_use = token_for(client, secret, scope)  # the test client comes from 127.0.0.1
    refused_create = create(client, agent.secret)

    assert refused_use.status_code == refused_create.status_code == 403
    assert "127.0.0.1" in refused_use.json()["message"]
    assert JobCredential.objects.count() == 1
    allowed = token_for(client, secret, scope, REMOTE_ADDR="10.1.2.3")
    assert allowed.status_code == 200, allowed.content
