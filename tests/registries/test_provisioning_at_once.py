"""Provisioning in one transaction, when the driver checked the registry moments ago
(``recent_checks``): the outcome of the two-step attempt, its locks in the same order, and its
failures recorded as the two-step attempt records them. Against a real Distribution registry."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from clusters.models import AgentEnvironmentVariable
from registries.drivers import get_driver
from registries.models import REGISTRY_URL_VARIABLE, Registry, State
from registries.services import registry_provision
from tests.registries.factories import RegistryFactory
from tests.test_locks import CLUSTER, REGISTRY, VARIABLE, run

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db]


@pytest.fixture
def checked(registry_settings):
    """The registry was checked moments ago (an earlier attempt did), and the check stands for
    the whole test."""
    registry_settings.REGISTRY_CHECK_CACHE_SECONDS = 3600
    get_driver("distribution").check_api()
    return registry_settings


def transitions(registry: Registry) -> list[tuple[str, str, int]]:
    return list(registry.events.values_list("from_state", "to_state", "attempt"))


def test_the_attempt_is_one_transaction_locking_cluster_registry_and_variable_in_order(
    checked, registry_process
) -> None:
    registry = RegistryFactory()

    locks = run(lambda: registry_provision(registry_id=registry.pk))

    assert locks == [[CLUSTER, REGISTRY, VARIABLE]]
    registry.refresh_from_db()
    url = f"{registry_process.host}/{registry.namespace}"
    assert (registry.state, registry.url, registry.attempts) == (State.READY, url, 1)
    assert (registry.attempt_deadline, registry.next_attempt_at) == (None, None)
    assert transitions(registry) == [
        (State.PENDING, State.PROVISIONING, 1),
        (State.PROVISIONING, State.READY, 1),
    ]
    assert AgentEnvironmentVariable.objects.get(cluster=registry.cluster).value == url


def test_without_a_recent_check_the_attempt_takes_two_transactions(registry_settings) -> None:
    registry_settings.REGISTRY_CHECK_CACHE_SECONDS = 0  # no check is ever reused
    get_driver("distribution").check_api()
    registry = RegistryFactory()

    locks = run(lambda: registry_provision(registry_id=registry.pk))

    # Both transactions lock the cluster first (found by the registry's id: one statement).
    assert locks == [[CLUSTER, REGISTRY], [CLUSTER, REGISTRY, VARIABLE]]
    assert Registry.objects.get(pk=registry.pk).state == State.READY


def test_a_failure_is_rolled_back_whole_and_recorded_by_the_two_step_attempt(
    checked, caplog
) -> None:
    registry = RegistryFactory()
    # Another source owns the variable the registry publishes: not the registry's failure.
    AgentEnvironmentVariable.objects.create(
        cluster=registry.cluster, name=REGISTRY_URL_VARIABLE, value="x", source="other"
    )

    with caplog.at_level(logging.INFO, logger="registries.services"):
        result = registry_provision(registry_id=registry.pk)

    assert "registry.provision.at_once_failed" in caplog.messages
    registry.refresh_from_db()
    assert (result.state, result.retry, result.attempts) == (State.FAILED, False, 1)
    # One attempt, counted once: nothing of the rolled-back transaction remains.
    assert transitions(registry) == [
        (State.PENDING, State.PROVISIONING, 1),
        (State.PROVISIONING, State.FAILED, 1),
    ]
    assert registry.events.last().message.startswith("not retryable: ")
    variable = AgentEnvironmentVariable.objects.get(cluster=registry.cluster)
    assert (variable.value, variable.source) == ("x", "other")


@pytest.mark.parametrize("state", [State.READY, State.FAILED, State.DEPROVISIONING])
def test_a_registry_that_moved_on_is_left_as_it_is(checked, state) -> None:
    registry = RegistryFactory(state=state)

    result = registry_provision(registry_id=registry.pk)

    assert (result.state, result.retry) == (state, False)
    assert registry.events.count() == 0


def test_an_attempt_another_worker_holds_is_left_to_it(checked) -> None:
    lease_runs = timezone.now() + timedelta(hours=1)
    registry = RegistryFactory(state=State.PROVISIONING, attempts=1, attempt_deadline=lease_runs)

    result = registry_provision(registry_id=registry.pk)

    assert (result.state, result.retry) == (State.PROVISIONING, False)
    registry.refresh_from_db()
    assert (registry.attempts, registry.attempt_deadline) == (1, lease_runs)
    assert registry.events.count() == 0
