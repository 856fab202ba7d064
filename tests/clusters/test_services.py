from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from clusters import services
from clusters.models import (
    AgentEnvironmentVariable,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
)
from clusters.selectors import agent_token_authenticate
from registries.models import Registry
from tests.clusters.factories import ClusterFactory, OrganizationFactory, QueueFactory

pytestmark = pytest.mark.django_db


def test_organization_create_rejects_a_slug_that_is_not_a_registry_path_component() -> None:
    with pytest.raises(ValidationError) as excinfo:
        services.organization_create(slug="Acme_Inc", name="Acme")
    assert excinfo.value.message_dict == {
        "slug": ["Use lowercase letters, digits and single hyphens between them."]
    }
    assert Organization.objects.count() == 0


def test_cluster_create_rejects_a_duplicate_name_in_the_organization() -> None:
    organization = OrganizationFactory()
    services.cluster_create(organization=organization, name="Open Source")
    with pytest.raises(ValidationError) as excinfo:
        services.cluster_create(organization=organization, name="Open Source")
    assert excinfo.value.message_dict == {
        "name": ["A cluster named 'Open Source' already exists in this organization."]
    }
    assert Cluster.objects.count() == 1


def test_cluster_create_rejects_a_color_that_is_not_hex() -> None:
    with pytest.raises(ValidationError) as excinfo:
        services.cluster_create(organization=OrganizationFactory(), name="c", color="pink")
    assert excinfo.value.message_dict == {"color": ["Use a hex color such as #FFE0F1."]}


def test_queue_create_makes_a_hosted_queue_from_a_shape() -> None:
    cluster = ClusterFactory()
    queue = services.queue_create(
        cluster=cluster, key="linux-small", description="d", instance_shape="LINUX_AMD64_2X4"
    )
    queue.refresh_from_db()
    assert (queue.key, queue.description, queue.instance_shape, queue.hosted) == (
        "linux-small",
        "d",
        "LINUX_AMD64_2X4",
        True,
    )
    assert queue.shape is not None
    assert (queue.shape.cpu, queue.shape.memory) == (2, 4)


def test_queue_create_without_a_shape_is_self_hosted_and_owes_no_registry() -> None:
    queue = services.queue_create(cluster=ClusterFactory(), key="default")
    assert queue.hosted is False
    assert Registry.objects.count() == 0


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("has space", "key Use only letters, digits, hyphens (-) and underscores (_)."),
        ("dots.not.allowed", "key Use only letters, digits, hyphens (-) and underscores (_)."),
        ("", "key This field cannot be blank."),
        ("k" * 101, "key Ensure this value has at most 100 characters (it has 101)."),
    ],
)
def test_queue_create_rejects_an_invalid_key_and_writes_nothing(key: str, message: str) -> None:
    cluster = ClusterFactory()
    with pytest.raises(ValidationError) as excinfo:
        services.queue_create(cluster=cluster, key=key, instance_shape="LINUX_AMD64_2X4")
    assert [f"{field} {m}" for field, ms in excinfo.value.message_dict.items() for m in ms] == [
        message
    ]
    assert Queue.objects.count() == 0
    assert Registry.objects.count() == 0


def test_queue_create_accepts_a_key_of_exactly_100_characters() -> None:
    queue = services.queue_create(cluster=ClusterFactory(), key="k" * 100)
    assert len(queue.key) == 100


def test_queue_create_rejects_an_unknown_instance_shape_and_writes_nothing() -> None:
    cluster = ClusterFactory()
    with pytest.raises(ValidationError) as excinfo:
        services.queue_create(cluster=cluster, key="big", instance_shape="LINUX_AMD64_3X5")
    [message] = excinfo.value.message_dict["instance_shape"]
    assert message.startswith("'LINUX_AMD64_3X5' is not a known instance shape; use one of ")
    assert "LINUX_AMD64_2X4" in message
    assert "MACOS_ARM64_M4_6X28" in message
    assert Queue.objects.count() == 0
    assert Registry.objects.count() == 0


def test_queue_create_rejects_a_duplicate_key_in_the_cluster_and_writes_nothing() -> None:
    cluster = ClusterFactory()
    services.queue_create(cluster=cluster, key="default")
    with pytest.raises(ValidationError) as excinfo:
        services.queue_create(cluster=cluster, key="default", instance_shape="LINUX_AMD64_2X4")
    assert excinfo.value.message_dict == {
        "key": ["A queue with key 'default' already exists in this cluster."]
    }
    assert Queue.objects.count() == 1
    assert Registry.objects.count() == 0


def test_the_same_key_may_exist_in_two_clusters() -> None:
    services.queue_create(cluster=ClusterFactory(), key="default")
    services.queue_create(cluster=ClusterFactory(), key="default")
    assert Queue.objects.filter(key="default").count() == 2


def test_queue_update_resizes_a_hosted_queue_within_its_machine_type() -> None:
    queue = QueueFactory(hosted=True)
    services.queue_update(queue=queue, instance_shape="LINUX_AMD64_8X32", description="bigger")
    queue.refresh_from_db()
    assert (queue.instance_shape, queue.description) == ("LINUX_AMD64_8X32", "bigger")


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("", "LINUX_AMD64_2X4", "A queue cannot change between hosted and self-hosted."),
        ("LINUX_AMD64_2X4", "", "A queue cannot change between hosted and self-hosted."),
        (
            "LINUX_AMD64_2X4",
            "LINUX_ARM64_2X4",
            "Instance shape cannot be changed to LINUX_ARM64_2X4: only the size of a "
            "linux/amd64 queue can change.",
        ),
        (
            "LINUX_ARM64_4X16",
            "MACOS_ARM64_M4_6X28",
            "Instance shape cannot be changed to MACOS_ARM64_M4_6X28: only the size of a "
            "linux/arm64 queue can change.",
        ),
    ],
)
def test_queue_update_never_converts_a_queue(before: str, after: str, message: str) -> None:
    queue = QueueFactory(instance_shape=before)
    with pytest.raises(ValidationError) as excinfo:
        services.queue_update(queue=queue, instance_shape=after)
    assert excinfo.value.message_dict == {"instance_shape": [message]}
    queue.refresh_from_db()
    assert queue.instance_shape == before


def test_agent_token_create_stores_only_a_hash_and_returns_the_secret_once() -> None:
    cluster = ClusterFactory()
    token, secret = services.agent_token_create(cluster=cluster, description="agents")
    assert secret.startswith("bkct_")
    assert len(secret) == 5 + 43
    stored = ClusterAgentToken.objects.get(pk=token.pk)
    assert stored.token_hash == ClusterAgentToken.hash_secret(secret)
    assert secret not in {stored.token_hash, stored.token_prefix, stored.description}
    assert stored.token_prefix == secret[:9]
    assert agent_token_authenticate(secret) == token


def test_agent_token_create_requires_a_description_and_a_future_expiry() -> None:
    cluster = ClusterFactory()
    with pytest.raises(ValidationError) as excinfo:
        services.agent_token_create(cluster=cluster, description="")
    assert excinfo.value.message_dict == {"description": ["This field cannot be blank."]}
    with pytest.raises(ValidationError) as excinfo:
        services.agent_token_create(
            cluster=cluster, description="x", expires_at=timezone.now() - timedelta(seconds=1)
        )
    assert excinfo.value.message_dict == {"expires_at": ["Must be in the future."]}
    assert ClusterAgentToken.objects.count() == 0


def test_revoked_and_expired_tokens_no_longer_authenticate() -> None:
    cluster = ClusterFactory()
    revoked, revoked_secret = services.agent_token_create(cluster=cluster, description="a")
    expiring, expiring_secret = services.agent_token_create(
        cluster=cluster, description="b", expires_at=timezone.now() + timedelta(hours=1)
    )
    services.agent_token_revoke(token=revoked)
    first_revocation = revoked.revoked_at
    services.agent_token_revoke(token=revoked)
    assert revoked.revoked_at == first_revocation  # revoking twice changes nothing
    ClusterAgentToken.objects.filter(pk=expiring.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert agent_token_authenticate(revoked_secret) is None
    assert agent_token_authenticate(expiring_secret) is None
    assert agent_token_authenticate("bkct_not-a-token") is None


def test_agent_environment_set_is_idempotent_and_owned_by_its_source() -> None:
    cluster = ClusterFactory()
    services.agent_environment_set(cluster=cluster, name="FOO", value="1", source="registry")
    services.agent_environment_set(cluster=cluster, name="FOO", value="2", source="registry")
    assert list(AgentEnvironmentVariable.objects.values_list("name", "value", "source")) == [
        ("FOO", "2", "registry")
    ]
    with pytest.raises(ValidationError) as excinfo:
        services.agent_environment_set(cluster=cluster, name="FOO", value="3", source="other")
    assert excinfo.value.message_dict == {"name": ["FOO is owned by the 'registry' source."]}
    assert services.agent_environment_unset(cluster=cluster, name="FOO", source="other") is False
    assert services.agent_environment_unset(cluster=cluster, name="FOO", source="registry") is True
    assert AgentEnvironmentVariable.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("BUILDKITE_CLUSTER_ID", "BUILDKITE_CLUSTER_ID is set by the platform for every job."),
        ("PATH", "PATH is reserved: jobs must not receive it from here."),
        ("LD_PRELOAD", "LD_PRELOAD is reserved: jobs must not receive it from here."),
        (
            "BUILDKITE_HOOKS_PATH",
            "BUILDKITE_HOOKS_PATH is reserved: jobs must not receive it from here.",
        ),
        (
            "BUILDKITE_AGENT_ACCESS_TOKEN",
            "BUILDKITE_AGENT_ACCESS_TOKEN is reserved: jobs must not receive it from here.",
        ),
        (
            "lower",
            "Use uppercase letters, digits and underscores, not starting with a digit.",
        ),
        ("1ABC", "Use uppercase letters, digits and underscores, not starting with a digit."),
    ],
)
def test_agent_environment_set_refuses_bad_and_reserved_names(name: str, message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        services.agent_environment_set(
            cluster=ClusterFactory(), name=name, value="x", source="registry"
        )
    assert excinfo.value.message_dict == {"name": [message]}
    assert AgentEnvironmentVariable.objects.count() == 0


def test_agent_environment_set_refuses_a_nul_character() -> None:
    with pytest.raises(ValidationError) as excinfo:
        services.agent_environment_set(
            cluster=ClusterFactory(), name="FOO", value="a\x00b", source="registry"
        )
    assert excinfo.value.message_dict == {"value": ["Must not contain NUL characters."]}
    assert AgentEnvironmentVariable.objects.count() == 0


def test_cluster_update_changes_what_was_given_and_checks_the_default_queue() -> None:
    cluster = ClusterFactory(description="before")
    queue = QueueFactory(cluster=cluster)
    services.cluster_update(cluster=cluster, name="renamed", default_queue=queue)
    cluster.refresh_from_db()
    assert (cluster.name, cluster.description, cluster.default_queue) == (
        "renamed",
        "before",
        queue,
    )
    with pytest.raises(ValidationError) as excinfo:
        services.cluster_update(cluster=cluster, default_queue=QueueFactory())
    assert excinfo.value.message_dict == {
        "default_queue": ["The default queue must be in this cluster."]
    }
    services.cluster_update(cluster=cluster, default_queue=None)
    cluster.refresh_from_db()
    assert cluster.default_queue is None


def test_queue_update_checks_the_stored_shape_not_the_callers_copy() -> None:
    queue = QueueFactory(instance_shape="")
    queue.instance_shape = "LINUX_AMD64_2X4"  # as an admin form leaves it before saving
    with pytest.raises(ValidationError) as excinfo:
        services.queue_update(queue=queue, instance_shape="LINUX_AMD64_2X4")
    assert excinfo.value.message_dict == {
        "instance_shape": ["A queue cannot change between hosted and self-hosted."]
    }
    assert Queue.objects.get(pk=queue.pk).instance_shape == ""
