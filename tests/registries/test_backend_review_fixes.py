"""Registry backends, review findings 2, 6 and 7: a public host change is kept until no stale
copy or attempt in flight can use the old host; placement settings in the wrong shape fail
``manage.py check``; a weight or capacity beyond PostgreSQL's integer is refused."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from registries.backends import backends_all, backends_forget
from registries.checks import check_registry_settings
from registries.drivers.distribution import recent_checks
from registries.models import BackendState, RegistryBackend, State
from registries.reconciler.repairs import rehost_settle
from registries.services import registry_provision
from registries.services.backends import MAX_WHOLE, backend_drain
from tests.registries.factories import RegistryFactory, add_backend

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_backend")]


# --- finding 2: a new public host ------------------------------------------------------------


def test_a_registry_made_ready_on_the_old_host_after_a_pass_is_still_rehosted(
    reconcile,
) -> None:
    moving = add_backend("moving")
    for backend in RegistryBackend.objects.exclude(pk=moving.pk):
        backend_drain(backend=backend)
    recent_checks.put(moving.api_url, "checked", moving.token_service)
    early = RegistryFactory(state=State.READY, backend=moving)
    early.url = f"moving.registry.example/{early.namespace}"
    early.save(update_fields=["url"])
    backends_forget()
    backends_all()  # this worker's copy: the old host
    # Another process changes the host (backend_update there): this copy is not forgotten.
    RegistryBackend.objects.filter(pk=moving.pk).update(
        public_host="new.registry.example", hosts_changed_at=timezone.now()
    )

    reconcile()
    early.refresh_from_db()
    assert early.url == f"new.registry.example/{early.namespace}"
    assert RegistryBackend.objects.get(pk=moving.pk).hosts_changed_at is not None

    late = RegistryFactory(state=State.PENDING)
    assert registry_provision(registry_id=late.pk).state == State.READY
    late.refresh_from_db()
    assert late.url == f"moving.registry.example/{late.namespace}"  # the stale copy's host

    reconcile()
    late.refresh_from_db()
    assert late.url == f"new.registry.example/{late.namespace}"

    # Once no copy or attempt can still hold the old host, the next pass clears the stamp.
    settled = timezone.now() - rehost_settle() - timedelta(seconds=1)
    RegistryBackend.objects.filter(pk=moving.pk).update(hosts_changed_at=settled)
    reconcile()
    assert RegistryBackend.objects.get(pk=moving.pk).hosts_changed_at is None


def test_the_settle_time_covers_a_copy_and_an_attempt(settings) -> None:
    settings.REGISTRY_BACKENDS_CACHE_SECONDS = 5.0
    settings.CELERY_TASK_TIME_LIMIT = 90
    settings.REGISTRY_RECONCILE_INTERVAL_SECONDS = 30

    assert rehost_settle() == timedelta(seconds=5 + 90 + 30)


# --- finding 6: placement settings -----------------------------------------------------------


def _ids() -> list[str]:
    return [message.id for message in check_registry_settings(None)]


@pytest.mark.parametrize(
    "labels", [["eu-west"], "eu-west", {"region": 1}, {"region": ["eu"]}, 7, None]
)
def test_placement_labels_in_the_wrong_shape_are_an_error(settings, labels) -> None:
    settings.REGISTRY_PLACEMENT_LABELS = labels

    assert _ids() == ["registries.E007"]


def test_an_unknown_placement_strategy_is_an_error(settings) -> None:
    settings.REGISTRY_PLACEMENT = "least-loaded"

    [error] = check_registry_settings(None)
    assert error.id == "registries.E006"
    assert error.hint == "Use one of: weighted, least_loaded."


def test_good_placement_settings_pass(settings) -> None:
    settings.REGISTRY_PLACEMENT = "least_loaded"
    settings.REGISTRY_PLACEMENT_LABELS = {"region": "eu-west"}

    assert _ids() == []


# --- finding 7: weight and capacity bounds ---------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"weight": MAX_WHOLE + 1}, {"capacity": MAX_WHOLE + 1}, {"weight": 3_000_000_000}],
)
def test_a_weight_or_capacity_beyond_an_integer_is_refused(fields) -> None:
    with pytest.raises(ValidationError) as refused:
        add_backend("huge", **fields)

    assert set(refused.value.message_dict) == set(fields)
    assert not RegistryBackend.objects.filter(name="huge").exists()


def test_the_largest_weight_and_capacity_are_stored() -> None:
    add_backend("largest", weight=MAX_WHOLE, capacity=MAX_WHOLE)

    stored = RegistryBackend.objects.get(name="largest")
    assert (stored.weight, stored.capacity) == (MAX_WHOLE, MAX_WHOLE)
    assert stored.state == BackendState.ACTIVE


def test_the_command_refuses_a_huge_weight_and_writes_nothing() -> None:
    add_backend("target")

    for args in (["--weight", "3000000000"], ["--capacity", str(MAX_WHOLE + 1)]):
        with pytest.raises(CommandError, match="weight|capacity"):
            call_command("registry_backend", "set", "target", *args, stdout=StringIO())
    stored = RegistryBackend.objects.get(name="target")
    assert (stored.weight, stored.capacity) == (100, None)
