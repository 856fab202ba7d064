"""The registry token endpoint's principal from the per-process cache (``controlplane.hotcache``):
a warm request reads no database, and every change that alters what a credential may do is seen
by the next request in the same process; a principal whose registry is not ready is never
cached.

Tests run outside a transaction (``transaction=True``): the caches keep nothing read inside one.
The cache's bound is set far out (an hour), so that only invalidation can explain a fresh answer.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.utils import timezone

from clusters import services
from clusters.models import Organization
from controlplane import hotcache
from registries.models import Registry, State
from registries.services import job_credential_create, registry_deprovision_start
from registries.views import BAD_CREDENTIALS, BAD_JOB_CREDENTIAL
from tests.registries.test_token_endpoint import SERVICE, Agent, basic, make_agent
from tests.support.registry_tokens import access_claims

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/registry/token"
ALL = ["pull", "push", "delete"]


@pytest.fixture(autouse=True)
def cache(settings) -> None:
    settings.HOT_CACHE_SECONDS = 3600
    hotcache.clear()


@pytest.fixture
def organization() -> Organization:
    return services.organization_create(slug="acme", name="Acme")


@pytest.fixture
def agent(organization: Organization) -> Agent:
    return make_agent(organization, "Open Source")


def token_for(client, secret: str, namespace: str, **extra: str):
    scope = f"repository:{namespace}/base:pull,push"
    return client.get(URL, {"service": SERVICE, "scope": scope}, **basic(secret), **extra)


def granted(response) -> list[dict[str, object]]:
    assert response.status_code == 200, response.content
    return access_claims(response.json()["token"])["access"]


def warm(client, secret: str, namespace: str, django_assert_num_queries) -> None:
    assert granted(token_for(client, secret, namespace))
    with django_assert_num_queries(0):
        assert granted(token_for(client, secret, namespace))


def test_a_warm_request_reads_no_database_and_pings_nothing(
    client, agent, django_assert_num_queries
) -> None:
    with django_assert_num_queries(1):  # the token and its cluster's ready namespace
        token_for(client, agent.secret, agent.namespace)
    connection.health_check_done = False

    with django_assert_num_queries(0):
        response = token_for(client, agent.secret, agent.namespace)

    assert granted(response) == [
        {"type": "repository", "name": f"{agent.namespace}/base", "actions": ALL}
    ]
    assert access_claims(response.json()["token"])["sub"] == agent.subject
    assert connection.health_check_done is False


def test_a_job_credential_is_one_query_then_none(client, agent, django_assert_num_queries) -> None:
    _, secret = job_credential_create(agent_token=agent.token, job_id="job-1")
    with django_assert_num_queries(1):  # the credential, its agent token and the namespace
        assert granted(token_for(client, secret, agent.namespace))
    with django_assert_num_queries(0):
        assert granted(token_for(client, secret, agent.namespace))


def test_a_revoked_agent_token_is_refused_at_once(client, agent, django_assert_num_queries) -> None:
    warm(client, agent.secret, agent.namespace, django_assert_num_queries)

    services.agent_token_revoke(token=agent.token)

    response = token_for(client, agent.secret, agent.namespace)
    assert response.status_code == 401
    assert response.json()["message"] == BAD_CREDENTIALS


def test_a_revoked_job_credential_is_refused_at_once(
    client, agent, django_assert_num_queries
) -> None:
    _, secret = job_credential_create(agent_token=agent.token, job_id="job-1")
    warm(client, secret, agent.namespace, django_assert_num_queries)

    assert (
        client.delete(
            "/v3/agent/registry-credentials/current", HTTP_AUTHORIZATION=f"Token {secret}"
        ).status_code
        == 204
    )

    response = token_for(client, secret, agent.namespace)
    assert response.status_code == 401
    assert response.json()["message"] == BAD_JOB_CREDENTIAL


def test_a_job_credential_made_from_a_revoked_agent_token_is_refused_at_once(
    client, agent, django_assert_num_queries
) -> None:
    _, secret = job_credential_create(agent_token=agent.token, job_id="job-1")
    warm(client, secret, agent.namespace, django_assert_num_queries)

    services.agent_token_revoke(token=agent.token)

    assert token_for(client, secret, agent.namespace).status_code == 401


def test_a_principal_never_outlives_its_job_credential(
    client, agent, settings, monkeypatch, django_assert_num_queries
) -> None:
    settings.REGISTRY_JOB_CREDENTIAL_TTL_SECONDS = 600
    _, secret = job_credential_create(agent_token=agent.token, job_id="job-1")
    warm(client, secret, agent.namespace, django_assert_num_queries)
    started = hotcache.clock()

    monkeypatch.setattr(hotcache, "clock", lambda: started + 599)
    with django_assert_num_queries(0):
        token_for(client, secret, agent.namespace)
    monkeypatch.setattr(hotcache, "clock", lambda: started + 601)
    with django_assert_num_queries(1):  # read again: the database decides
        token_for(client, secret, agent.namespace)


def test_a_principal_never_outlives_its_agent_token(
    client, organization, monkeypatch, django_assert_num_queries
) -> None:
    agent = make_agent(organization, "Expiring", expires_at=timezone.now() + timedelta(minutes=10))
    warm(client, agent.secret, agent.namespace, django_assert_num_queries)
    started = hotcache.clock()

    monkeypatch.setattr(hotcache, "clock", lambda: started + 10 * 60 + 1)
    with django_assert_num_queries(1):
        token_for(client, agent.secret, agent.namespace)


def test_a_narrower_ip_allow_list_applies_to_the_next_request(
    client, agent, django_assert_num_queries
) -> None:
    _, secret = job_credential_create(agent_token=agent.token, job_id="job-1")
    warm(client, secret, agent.namespace, django_assert_num_queries)
    warm(client, agent.secret, agent.namespace, django_assert_num_queries)

    services.agent_token_update(token=agent.token, allowed_ip_addresses="10.0.0.0/8")

    assert token_for(client, agent.secret, agent.namespace).status_code == 403
    assert token_for(client, secret, agent.namespace).status_code == 403
    assert granted(token_for(client, secret, agent.namespace, REMOTE_ADDR="10.0.0.7"))


def test_a_registry_being_deprovisioned_grants_nothing_from_the_next_request(
    client, agent, django_assert_num_queries
) -> None:
    warm(client, agent.secret, agent.namespace, django_assert_num_queries)

    registry = Registry.objects.get(cluster=agent.cluster)
    registry_deprovision_start(registry=registry, reason="test")

    assert granted(token_for(client, agent.secret, agent.namespace)) == []


def test_a_deleted_cluster_takes_its_principals_with_it(
    client, agent, django_assert_num_queries
) -> None:
    warm(client, agent.secret, agent.namespace, django_assert_num_queries)

    services.cluster_delete(cluster=agent.cluster)

    assert token_for(client, agent.secret, agent.namespace).status_code == 401


def test_a_registry_not_ready_yet_is_read_again_until_it_is(
    client, organization, django_assert_num_queries
) -> None:
    agent = make_agent(organization, "Provisioning", state=State.PROVISIONING)
    assert granted(token_for(client, agent.secret, agent.namespace)) == []
    with django_assert_num_queries(1):  # not cached
        assert granted(token_for(client, agent.secret, agent.namespace)) == []

    # A worker (another process) marks it ready: nothing here hears of it.
    Registry.objects.filter(cluster=agent.cluster).update(
        state=State.READY, url=f"127.0.0.1:5000/{agent.namespace}"
    )

    assert granted(token_for(client, agent.secret, agent.namespace)) == [
        {"type": "repository", "name": f"{agent.namespace}/base", "actions": ALL}
    ]


def test_the_refresh_grant_is_warm_too_and_ends_with_its_agent_token(
    client, agent, django_assert_num_queries
) -> None:
    response = client.get(
        URL,
        {
            "service": SERVICE,
            "scope": f"repository:{agent.namespace}/base:pull",
            "offline_token": "true",
        },
        **basic(agent.secret),
    )
    form = urlencode(
        {
            "grant_type": "refresh_token",
            "refresh_token": response.json()["refresh_token"],
            "service": SERVICE,
            "scope": f"repository:{agent.namespace}/base:pull",
        }
    )

    def refresh():
        return client.post(URL, form, content_type="application/x-www-form-urlencoded")

    assert refresh().status_code == 200
    with django_assert_num_queries(0):
        assert granted(refresh())

    services.agent_token_revoke(token=agent.token)

    assert refresh().status_code == 401
