"""GET /v3/agent/environment: what a job on a queue receives, for the holder of an agent token."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from clusters import job_environment, services
from clusters.models import AgentEnvironmentVariable, ClusterAgentToken
from clusters.selectors import EnvironmentEntry
from tests.clusters.factories import ClusterAgentTokenFactory, ClusterFactory, QueueFactory
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db
URL = "/v3/agent/environment"
SECRET = "bkct_test-secret"


@pytest.fixture
def queue(hosted_queue):
    return hosted_queue


@pytest.fixture
def agent(queue) -> APIClient:
    ClusterAgentTokenFactory(cluster=queue.cluster, secret=SECRET)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {SECRET}")
    return client


def test_a_hosted_job_gets_the_platform_variables_and_the_registry_url(agent, queue) -> None:
    response = agent.get(URL, {"queue": "linux-small"})
    assert response.status_code == 200
    assert response.json() == {
        "cluster_id": str(queue.cluster.pk),
        "queue": {"id": str(queue.pk), "key": "linux-small", "hosted": True},
        "env": {
            "BUILDKITE_AGENT_META_DATA_QUEUE": "linux-small",
            "BUILDKITE_CLUSTER_ID": str(queue.cluster.pk),
            "BUILDKITE_CLUSTER_NAME": "Open Source",
            "BUILDKITE_COMPUTE_TYPE": "hosted",
            "BUILDKITE_HOSTED_REGISTRY_URL": "127.0.0.1:5000/acme/0123456789ab",
        },
        "sources": {
            "BUILDKITE_AGENT_META_DATA_QUEUE": "platform",
            "BUILDKITE_CLUSTER_ID": "platform",
            "BUILDKITE_CLUSTER_NAME": "platform",
            "BUILDKITE_COMPUTE_TYPE": "platform",
            "BUILDKITE_HOSTED_REGISTRY_URL": "registry",
        },
    }


def test_a_registry_published_later_reaches_every_hosted_queue(agent, queue) -> None:
    QueueFactory(cluster=queue.cluster, key="linux-large", instance_shape="LINUX_AMD64_8X32")
    response = agent.get(URL, {"queue": "linux-large"})
    assert response.json()["env"]["BUILDKITE_HOSTED_REGISTRY_URL"] == (
        "127.0.0.1:5000/acme/0123456789ab"
    )


def test_a_self_hosted_job_gets_the_cluster_variables_but_not_the_hosted_ones(agent, queue) -> None:
    QueueFactory(cluster=queue.cluster, key="default")
    response = agent.get(URL, {"queue": "default"})
    assert response.status_code == 200
    assert response.json()["env"] == {
        "BUILDKITE_AGENT_META_DATA_QUEUE": "default",
        "BUILDKITE_CLUSTER_ID": str(queue.cluster.pk),
        "BUILDKITE_CLUSTER_NAME": "Open Source",
        "BUILDKITE_COMPUTE_TYPE": "self-hosted",
    }


def test_shell_format_exports_every_value_on_one_ansi_c_quoted_line(agent, queue) -> None:
    services.agent_environment_set(
        cluster=queue.cluster,
        name="TRICKY",
        value='it\'s $(rm -rf /) `x` "y" \\ \nz\t\x1b',
        source="t",
    )
    response = agent.get(URL, {"queue": "linux-small", "format": "shell"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/x-shellscript; charset=utf-8"
    assert response.content.decode() == (
        f"# Job environment for queue linux-small of cluster {queue.cluster.pk}\n"
        "export BUILDKITE_AGENT_META_DATA_QUEUE=$'linux-small'\n"
        f"export BUILDKITE_CLUSTER_ID=$'{queue.cluster.pk}'\n"
        "export BUILDKITE_CLUSTER_NAME=$'Open Source'\n"
        "export BUILDKITE_COMPUTE_TYPE=$'hosted'\n"
        "export BUILDKITE_HOSTED_REGISTRY_URL=$'127.0.0.1:5000/acme/0123456789ab'\n"
        "export TRICKY=$'it\\'s $(rm -rf /) `x` \"y\" \\\\ \\nz\\t\\x1b'\n"
    )


def test_without_a_queue_the_cluster_default_queue_is_used(agent, queue) -> None:
    queue.cluster.default_queue = queue
    queue.cluster.save()
    response = agent.get(URL)
    assert response.status_code == 200
    assert response.json()["queue"]["key"] == "linux-small"


def test_without_a_queue_or_a_default_queue_the_agent_is_told_what_to_send(agent) -> None:
    response = agent.get(URL, {"format": "shell"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "message": "Name the agent's queue with ?queue=<key>; this cluster has no default queue."
    }


def test_a_queue_of_another_cluster_is_not_found(agent) -> None:
    QueueFactory(key="elsewhere", hosted=True, cluster=ClusterFactory())
    response = agent.get(URL, {"queue": "elsewhere", "format": "shell"})
    assert response.status_code == 404
    assert response.json() == {
        "message": "No queue 'elsewhere' found in this agent token's cluster."
    }


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Authentication credentials were not provided."),
        ("Token bkct_wrong", "Invalid, expired or revoked agent token."),
        ("Basic dXNlcjpwYXNz", "Send the cluster agent token as 'Authorization: Token <token>'."),
        ("Token", "Send the cluster agent token as 'Authorization: Token <token>'."),
    ],
)
def test_missing_or_wrong_credentials_get_401(queue, header, message) -> None:
    ClusterAgentTokenFactory(cluster=queue.cluster, secret=SECRET)
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(URL, {"queue": "linux-small"})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="agent"'
    assert response.json() == {"message": message}


def test_a_revoked_or_expired_token_gets_401(agent, queue) -> None:
    token = ClusterAgentToken.objects.get(cluster=queue.cluster)
    services.agent_token_revoke(token=token)
    assert agent.get(URL, {"queue": "linux-small"}).status_code == 401

    _, secret = services.agent_token_create(
        cluster=queue.cluster, description="short", expires_at=timezone.now() + timedelta(hours=1)
    )
    ClusterAgentToken.objects.filter(revoked_at__isnull=True).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = agent.get(URL, {"queue": "linux-small"})
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid, expired or revoked agent token."}


def test_a_bearer_header_is_accepted_too(queue) -> None:
    ClusterAgentTokenFactory(cluster=queue.cluster, secret=SECRET)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {SECRET}")
    assert client.get(URL, {"queue": "linux-small"}).status_code == 200


def test_the_environment_costs_a_fixed_number_of_queries(agent, queue) -> None:
    for n in range(20):
        services.agent_environment_set(cluster=queue.cluster, name=f"V{n}", value="x", source="t")
    # one joined query: the token, its cluster, the queue and the published variables
    with expected_queries("agent-environment"):
        assert agent.get(URL, {"queue": "linux-small"}).status_code == 200


#: Rows agent_environment_set refuses, written straight into the table as a migration, the shell
#: or a restored backup could.
SMUGGLED = {
    "BASH_ENV": "/srv/evil",
    "LD_PRELOAD": "/srv/evil.so",
    "PROMPT_COMMAND": "curl evil",
    "BUILDKITE_AGENT_ACCESS_TOKEN": "stolen",
    "CONTROLPLANE_AGENT_TOKEN": "bkct_x",
    "DOCKER_CONFIG": "/srv/evil",
    "REGISTRY_AUTH_FILE": "/srv/evil.json",
    "BUILDKITE_CLUSTER_ID": "not-the-cluster",
}


def smuggle(queue) -> None:
    for name, value in SMUGGLED.items():
        AgentEnvironmentVariable.objects.create(
            cluster=queue.cluster, name=name, value=value, source="platform"
        )


def test_reserved_names_in_the_database_are_never_served(agent, queue) -> None:
    smuggle(queue)

    as_json = agent.get(URL, {"queue": "linux-small"}).json()
    as_shell = agent.get(URL, {"queue": "linux-small", "format": "shell"}).content.decode()

    assert set(as_json["env"]) == {
        "BUILDKITE_AGENT_META_DATA_QUEUE",
        "BUILDKITE_CLUSTER_ID",
        "BUILDKITE_CLUSTER_NAME",
        "BUILDKITE_COMPUTE_TYPE",
        "BUILDKITE_HOSTED_REGISTRY_URL",
    }
    assert as_json["env"]["BUILDKITE_CLUSTER_ID"] == str(queue.cluster.pk)
    assert as_json["sources"]["BUILDKITE_CLUSTER_ID"] == "platform"
    for name in SMUGGLED:
        if name != "BUILDKITE_CLUSTER_ID":
            assert name not in as_shell
    assert "not-the-cluster" not in as_shell


@pytest.mark.django_db(transaction=True)
def test_reserved_names_in_the_database_are_never_served_over_http(live_server, queue) -> None:
    ClusterAgentTokenFactory(cluster=queue.cluster, secret=SECRET)
    smuggle(queue)
    response = requests.get(
        live_server.url + URL,
        params={"queue": "linux-small", "format": "shell"},
        headers={"Authorization": f"Token {SECRET}"},
        timeout=10,
    )
    assert response.status_code == 200
    names = [line.split("=")[0] for line in response.text.splitlines() if line.startswith("export")]
    assert names == [
        "export BUILDKITE_AGENT_META_DATA_QUEUE",
        "export BUILDKITE_CLUSTER_ID",
        "export BUILDKITE_CLUSTER_NAME",
        "export BUILDKITE_COMPUTE_TYPE",
        "export BUILDKITE_HOSTED_REGISTRY_URL",
    ]


@pytest.mark.parametrize("name", ["DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "CONTROLPLANE_URL"])
def test_the_hooks_own_names_cannot_be_published(queue, name: str) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        services.agent_environment_set(cluster=queue.cluster, name=name, value="x", source="t")


@pytest.mark.parametrize("name", ["lower_case", "HAS SPACE", "1LEADING_DIGIT", "NAME\n"])
def test_names_the_hook_would_refuse_are_withheld_not_served(
    agent, queue, monkeypatch, name: str
) -> None:
    """A row the table's constraint should have refused (a database restored without it) would
    make the hook refuse the whole environment: it is withheld instead."""

    def with_a_bad_row(*, queue):
        return [*job_environment_for_queue(queue=queue), EnvironmentEntry(name, "x", "test")]

    job_environment_for_queue = job_environment.agent_environment_for_queue
    monkeypatch.setattr(job_environment, "agent_environment_for_queue", with_a_bad_row)

    as_json = agent.get(URL, {"queue": "linux-small"}).json()
    as_shell = agent.get(URL, {"queue": "linux-small", "format": "shell"}).content.decode()

    assert name not in as_json["env"]
    assert "BUILDKITE_HOSTED_REGISTRY_URL" in as_json["env"]
    assert all(line.startswith(("#", "export BUILDKITE_")) for line in as_shell.splitlines())
