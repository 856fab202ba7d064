"""Provisioning attempts, in-process, against a real Distribution registry process."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from clusters.models import AgentEnvironmentVariable
from registries.conditions import error_detail
from registries.models import Registry, State
from registries.services import backoff_seconds, registry_provision, registry_retry
from tests.registries.factories import RegistryFactory
from tests.support.processes import closed_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry() -> Registry:
    return RegistryFactory()


def transitions(registry: Registry) -> list[tuple[str, str, int]]:
    return list(registry.events.values_list("from_state", "to_state", "attempt"))


def test_a_reachable_registry_becomes_ready_and_its_url_is_published(
    registry, registry_settings, registry_process
) -> None:
    result = registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    expected_url = f"{registry_process.host}/acme/{registry.cluster.pk.hex[:12]}"
    assert (result.state, result.retry, result.attempts) == (State.READY, False, 1)
    assert (registry.state, registry.url, registry.attempts, registry.last_error) == (
        State.READY,
        expected_url,
        1,
        "",
    )
    assert registry.ready_at is not None
    assert transitions(registry) == [
        (State.PENDING, State.PROVISIONING, 1),
        (State.PROVISIONING, State.READY, 1),
    ]
    assert list(
        AgentEnvironmentVariable.objects.filter(cluster=registry.cluster).values_list(
            "name", "value", "source"
        )
    ) == [("BUILDKITE_HOSTED_REGISTRY_URL", expected_url, "registry")]


def test_provisioning_a_ready_registry_again_changes_nothing(registry, registry_settings) -> None:
    registry_provision(registry_id=registry.pk)
    registry.refresh_from_db()
    before = (registry.state, registry.url, registry.attempts, registry.state_changed_at)

    result = registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert result.state == State.READY
    assert result.retry is False
    assert (registry.state, registry.url, registry.attempts, registry.state_changed_at) == before
    assert len(transitions(registry)) == 2
    assert AgentEnvironmentVariable.objects.filter(cluster=registry.cluster).count() == 1


def test_a_missing_registry_row_is_nothing_to_do() -> None:
    result = registry_provision(registry_id="00000000-0000-0000-0000-000000000000")
    assert (result.state, result.retry) == (None, False)


def test_an_unreachable_registry_is_retried_then_failed_with_the_error(registry, settings) -> None:
    settings.REGISTRY_URL = closed_url()
    settings.REGISTRY_PROVISION_MAX_ATTEMPTS = 3

    results = [registry_provision(registry_id=registry.pk) for _ in range(3)]

    registry.refresh_from_db()
    assert [(r.state, r.retry, r.attempts) for r in results] == [
        (State.PENDING, True, 1),
        (State.PENDING, True, 2),
        (State.FAILED, False, 3),
    ]
    assert registry.state == State.FAILED
    # Tenants read the failure's name; operators keep the request and what the library said.
    assert registry.last_error == "The registry did not answer (connection refused)"
    assert error_detail(registry).startswith(f"GET {settings.REGISTRY_URL}/v2/ failed: ")
    assert "Connection refused" in error_detail(registry)
    assert transitions(registry) == [
        (State.PENDING, State.PROVISIONING, 1),
        (State.PROVISIONING, State.PENDING, 1),
        (State.PENDING, State.PROVISIONING, 2),
        (State.PROVISIONING, State.PENDING, 2),
        (State.PENDING, State.PROVISIONING, 3),
        (State.PROVISIONING, State.FAILED, 3),
    ]
    assert registry.events.last().message == (
        "gave up after 3 attempts: The registry did not answer (connection refused)"
    )
    assert not AgentEnvironmentVariable.objects.filter(cluster=registry.cluster).exists()
    # A failed registry is not picked up again by a stray task.
    assert registry_provision(registry_id=registry.pk).state == State.FAILED
    assert registry.events.count() == 6


def test_a_server_that_is_not_a_registry_fails_at_once_without_retrying(
    registry, settings, live_server
) -> None:
    settings.REGISTRY_URL = live_server.url  # this Django app: /v2/ is a JSON 404

    result = registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert (result.state, result.retry) == (State.FAILED, False)
    assert registry.last_error == (
        "The registry answered 404, which a registry configured for this service does not; "
        "an operator must check it"
    )
    assert error_detail(registry) == (
        f"GET {live_server.url}/v2/ answered 404; expected 200 or 401 from a registry. "
        "Check REGISTRY_URL."
    )
    assert registry.events.last().message.startswith("not retryable: ")


def test_retry_moves_a_failed_registry_back_to_pending_with_a_fresh_budget(
    registry, settings, registry_settings
) -> None:
    original = settings.REGISTRY_URL
    settings.REGISTRY_URL = closed_url()
    settings.REGISTRY_PROVISION_MAX_ATTEMPTS = 1
    assert registry_provision(registry_id=registry.pk).state == State.FAILED

    settings.REGISTRY_URL = original
    registry_retry(registry=registry)
    registry.refresh_from_db()
    assert (registry.state, registry.attempts) == (State.PENDING, 0)

    assert registry_provision(registry_id=registry.pk).state == State.READY
    assert [to for _, to, _ in transitions(registry)] == [
        State.PROVISIONING,
        State.FAILED,
        State.PENDING,
        State.PROVISIONING,
        State.READY,
    ]


@pytest.mark.parametrize("state", [State.PENDING, State.PROVISIONING, State.READY])
def test_only_a_failed_registry_can_be_retried(registry, state) -> None:
    Registry.objects.filter(pk=registry.pk).update(state=state, url="x")
    registry.refresh_from_db()
    with pytest.raises(ValidationError) as excinfo:
        registry_retry(registry=registry)
    assert excinfo.value.messages == [
        f"Only a failed registry can be retried; this one is {state}."
    ]
    assert registry.events.count() == 0


def test_an_interrupted_attempt_is_resumed(registry, registry_settings) -> None:
    Registry.objects.filter(pk=registry.pk).update(state=State.PROVISIONING, attempts=1)
    assert registry_provision(registry_id=registry.pk).state == State.READY
    first = registry.events.first()
    assert (first.from_state, first.to_state, first.attempt, first.message) == (
        State.PROVISIONING,
        State.PROVISIONING,
        2,
        "resumed after an interrupted attempt",
    )


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 1.0, 2.0), (2, 2.0, 4.0), (3, 4.0, 8.0)])
def test_backoff_doubles_with_jitter(settings, attempt, low, high) -> None:
    settings.REGISTRY_PROVISION_BACKOFF_SECONDS = 2.0
    settings.REGISTRY_PROVISION_BACKOFF_MAX_SECONDS = 100.0
    delays = [backoff_seconds(attempt) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1


def test_backoff_is_capped(settings) -> None:
    settings.REGISTRY_PROVISION_BACKOFF_SECONDS = 2.0
    settings.REGISTRY_PROVISION_BACKOFF_MAX_SECONDS = 10.0
    assert all(5.0 <= backoff_seconds(30) <= 10.0 for _ in range(100))


def test_an_error_that_is_not_the_registrys_fails_the_registry_instead_of_leaving_it_stuck(
    registry, registry_settings
) -> None:
    # Another source already owns the variable the registry publishes.
    AgentEnvironmentVariable.objects.create(
        cluster=registry.cluster, name="BUILDKITE_HOSTED_REGISTRY_URL", value="x", source="other"
    )

    result = registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert (result.state, result.retry) == (State.FAILED, False)
    assert registry.state == State.FAILED
    assert registry.last_error == (
        "An internal error stopped the attempt; the operators have the details"
    )
    assert error_detail(registry) == (
        "ValidationError: {'name': [\"BUILDKITE_HOSTED_REGISTRY_URL is owned by the 'other' "
        'source."]}'
    )
    assert registry.url == ""
    assert AgentEnvironmentVariable.objects.get(cluster=registry.cluster).value == "x"


def test_attempts_that_never_finish_count_against_the_budget(registry, settings) -> None:
    settings.REGISTRY_PROVISION_MAX_ATTEMPTS = 3
    Registry.objects.filter(pk=registry.pk).update(state=State.PROVISIONING, attempts=3)

    result = registry_provision(registry_id=registry.pk)

    registry.refresh_from_db()
    assert (result.state, registry.state) == (State.FAILED, State.FAILED)
    assert registry.last_error == "no attempt finished after 3 attempts"
    assert transitions(registry) == [(State.PROVISIONING, State.FAILED, 3)]
