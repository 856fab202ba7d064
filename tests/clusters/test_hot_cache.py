"""The agent environment from the per-process cache (``controlplane.hotcache``): a warm answer
reads no database and pings nothing, and every change that alters the answer is seen by the next
request in the same process; a hosted queue without its registry URL is never cached.

Tests run outside a transaction (``transaction=True``): the caches keep nothing read inside one.
The cache's bound is set far out (an hour), so that only invalidation can explain a fresh answer.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from clusters import services
from clusters.models import ClusterAgentToken, Queue
from clusters.selectors import HOSTED_ENVIRONMENT_REQUIRED
from controlplane import hotcache
from registries.models import REGISTRY_URL_VARIABLE
from tests.clusters.factories import ClusterAgentTokenFactory, QueueFactory

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/v3/agent/environment"
SECRET = "bkct_hot-cache-secret"
REGISTRY_URL = "127.0.0.1:5000/acme/0123456789ab"


@pytest.fixture(autouse=True)
def cache(settings) -> None:
    settings.HOT_CACHE_SECONDS = 3600
    hotcache.clear()


@pytest.fixture
def token(hosted_queue: Queue) -> ClusterAgentToken:
    return ClusterAgentTokenFactory(cluster=hosted_queue.cluster, secret=SECRET)


@pytest.fixture
def agent(token: ClusterAgentToken) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {SECRET}")
    return client


def environment(agent: APIClient, queue: str = "linux-small") -> dict[str, str]:
    response = agent.get(URL, {"queue": queue})
    assert response.status_code == 200, response.content
    return response.json()["env"]


def warm(agent: APIClient, django_assert_num_queries, **params: str) -> bytes:
    """Ask twice: the second answer comes from the cache (no query), the same bytes."""
    first = agent.get(URL, {"queue": "linux-small", **params})
    assert first.status_code == 200
    with django_assert_num_queries(0):
        second = agent.get(URL, {"queue": "linux-small", **params})
    assert second.status_code == 200
    assert second.content == first.content
    return second.content


def test_the_registry_url_variable_is_the_one_the_registries_app_publishes() -> None:
    assert {REGISTRY_URL_VARIABLE} == HOSTED_ENVIRONMENT_REQUIRED


@pytest.mark.parametrize("fmt", ["json", "shell"])
def test_a_warm_answer_reads_no_database_and_pings_nothing(
    agent, django_assert_num_queries, fmt: str
) -> None:
    agent.get(URL, {"queue": "linux-small", "format": fmt})
    # A request's first use of the connection would check it (CONN_HEALTH_CHECKS: SELECT 1)
    # and set this; a warm answer never uses it.
    connection.health_check_done = False

    with django_assert_num_queries(0):
        response = agent.get(URL, {"queue": "linux-small", "format": fmt})

    assert response.status_code == 200
    assert connection.health_check_done is False


def test_a_miss_is_one_query(agent, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        assert agent.get(URL, {"queue": "linux-small"}).status_code == 200


def test_a_revoked_token_is_refused_at_once(agent, token, django_assert_num_queries) -> None:
    warm(agent, django_assert_num_queries)

    services.agent_token_revoke(token=token)

    response = agent.get(URL, {"queue": "linux-small"})
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid, expired or revoked agent token."}


def test_an_answer_never_outlives_its_token(
    hosted_queue, monkeypatch, django_assert_num_queries
) -> None:
    expires_at = timezone.now() + timedelta(minutes=10)
    ClusterAgentTokenFactory(cluster=hosted_queue.cluster, secret=SECRET, expires_at=expires_at)
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Token {SECRET}")
    warm(agent, django_assert_num_queries)
    started = hotcache.clock()

    monkeypatch.setattr(hotcache, "clock", lambda: started + 9 * 60)
    with django_assert_num_queries(0):
        assert agent.get(URL, {"queue": "linux-small"}).status_code == 200
    monkeypatch.setattr(hotcache, "clock", lambda: started + 10 * 60 + 1)
    with django_assert_num_queries(1):  # read again: the database decides
        agent.get(URL, {"queue": "linux-small"})


def test_a_narrower_ip_allow_list_applies_to_the_next_request(
    agent, token, django_assert_num_queries
) -> None:
    warm(agent, django_assert_num_queries)

    services.agent_token_update(token=token, allowed_ip_addresses="10.0.0.0/8")

    response = agent.get(URL, {"queue": "linux-small"}, REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 403
    assert agent.get(URL, {"queue": "linux-small"}, REMOTE_ADDR="10.1.2.3").status_code == 200


def test_the_allow_list_is_checked_on_every_warm_request(
    hosted_queue, django_assert_num_queries
) -> None:
    ClusterAgentTokenFactory(
        cluster=hosted_queue.cluster, secret=SECRET, allowed_ip_addresses="10.0.0.0/8"
    )
    agent = APIClient(REMOTE_ADDR="10.1.2.3")
    agent.credentials(HTTP_AUTHORIZATION=f"Token {SECRET}")
    warm(agent, django_assert_num_queries)

    with django_assert_num_queries(0):
        response = agent.get(URL, {"queue": "linux-small"}, REMOTE_ADDR="192.0.2.1")

    assert response.status_code == 403
    assert "192.0.2.1" in response.json()["message"]


def test_a_published_variable_reaches_the_next_request(
    agent, hosted_queue, django_assert_num_queries
) -> None:
    warm(agent, django_assert_num_queries, format="shell")

    services.agent_environment_set(
        cluster=hosted_queue.cluster, name="NEW_VARIABLE", value="1", source="t"
    )

    assert environment(agent)["NEW_VARIABLE"] == "1"
    shell = agent.get(URL, {"queue": "linux-small", "format": "shell"}).content.decode()
    assert "export NEW_VARIABLE=$'1'" in shell


def test_a_removed_variable_is_gone_from_the_next_request(
    agent, hosted_queue, django_assert_num_queries
) -> None:
    services.agent_environment_set(cluster=hosted_queue.cluster, name="GONE", value="1", source="t")
    warm(agent, django_assert_num_queries)

    assert services.agent_environment_unset(cluster=hosted_queue.cluster, name="GONE", source="t")

    assert "GONE" not in environment(agent)


def test_a_renamed_cluster_is_named_in_the_next_request(
    agent, hosted_queue, django_assert_num_queries
) -> None:
    warm(agent, django_assert_num_queries)

    services.cluster_update(cluster=hosted_queue.cluster, name="Renamed")

    assert environment(agent)["BUILDKITE_CLUSTER_NAME"] == "Renamed"


def test_a_deleted_queue_is_not_found_at_once(
    agent, hosted_queue, django_assert_num_queries
) -> None:
    other = QueueFactory(cluster=hosted_queue.cluster, key="linux-large", hosted=True)
    warm(agent, django_assert_num_queries, queue="linux-large")

    services.queue_delete(queue=other)

    response = agent.get(URL, {"queue": "linux-large"})
    assert response.status_code == 404
    assert response.json() == {
        "message": "No queue 'linux-large' found in this agent token's cluster."
    }


def test_a_deleted_cluster_takes_its_answers_with_it(
    agent, hosted_queue, django_assert_num_queries
) -> None:
    warm(agent, django_assert_num_queries)

    services.cluster_delete(cluster=hosted_queue.cluster)

    assert agent.get(URL, {"queue": "linux-small"}).status_code == 401


def test_a_hosted_queue_without_its_registry_url_is_asked_again_until_it_has_one(
    django_assert_num_queries,
) -> None:
    queue = QueueFactory(key="linux-small", hosted=True)
    ClusterAgentTokenFactory(cluster=queue.cluster, secret=SECRET)
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Token {SECRET}")
    assert REGISTRY_URL_VARIABLE not in environment(agent)

    with django_assert_num_queries(1):  # not cached: read again
        assert REGISTRY_URL_VARIABLE not in environment(agent)

    # The registry becomes ready (in production, in a worker: another process).
    services.agent_environment_set(
        cluster=queue.cluster, name=REGISTRY_URL_VARIABLE, value=REGISTRY_URL, source="registry"
    )
    hotcache.clear()  # what another process's write cannot do: the next read must show the URL
    assert environment(agent)[REGISTRY_URL_VARIABLE] == REGISTRY_URL
    with django_assert_num_queries(0):  # complete now: cached
        assert environment(agent)[REGISTRY_URL_VARIABLE] == REGISTRY_URL


def test_a_self_hosted_queue_is_cached_without_the_registry_url(
    agent, hosted_queue, django_assert_num_queries
) -> None:
    QueueFactory(cluster=hosted_queue.cluster, key="default")
    assert REGISTRY_URL_VARIABLE not in environment(agent, "default")

    with django_assert_num_queries(0):
        assert environment(agent, "default")["BUILDKITE_COMPUTE_TYPE"] == "self-hosted"


def test_a_token_made_again_with_a_secret_seen_before_gets_its_own_answer(
    agent, token, django_assert_num_queries
) -> None:
    """Only tests reuse a secret, but no answer made for one row may serve another."""
    warm(agent, django_assert_num_queries)
    token.delete()
    other = QueueFactory(key="linux-small", hosted=True, cluster__name="Another")
    ClusterAgentTokenFactory(cluster=other.cluster, secret=SECRET)

    assert environment(agent)["BUILDKITE_CLUSTER_NAME"] == "Another"


def test_nothing_read_inside_a_transaction_is_kept(agent, django_assert_num_queries) -> None:
    with transaction.atomic():
        assert agent.get(URL, {"queue": "linux-small"}).status_code == 200
    with django_assert_num_queries(1):
        assert agent.get(URL, {"queue": "linux-small"}).status_code == 200
