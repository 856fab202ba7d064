"""The console's registry backends: the list, adding one (validated as the API does), and the
drain and activate actions."""

from __future__ import annotations

import pytest
from django.test import Client

from registries.models import DEFAULT_BACKEND, BackendState, RegistryBackend, State
from registries.services.backends import backend_create
from tests.registries.factories import RegistryFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_backend")]
CHANGELIST = "/admin/registries/registrybackend/"


FORM = {
    "name": "eu-1",
    "api_url": "http://registry-eu-1:5000",
    "public_host": "eu-1.registry.example",
    "token_service": "registry-eu-1",
    "storage": "s3",
    "labels": '{"region": "eu-west"}',
    "weight": "100",
    "capacity": "",
    "state": "active",
}


def test_the_list_shows_state_weight_and_registry_count(operator: Client) -> None:
    backend = backend_create(
        name="eu-1",
        api_url="http://registry-eu-1:5000",
        public_host="eu-1.registry.example",
        token_service="registry-eu-1",
        weight=250,
    )
    RegistryFactory(state=State.READY, backend=backend)
    RegistryFactory(state=State.READY, backend=backend)

    page = operator.get(CHANGELIST).content.decode()

    assert 'class="backend-state backend-active"' in page
    assert '<td class="field-weight">250</td>' in page
    assert '<td class="field-registry_count">2</td>' in page
    assert "(REGISTRY_TOKEN_SERVICE)" in page  # the default backend follows the setting


def test_adding_a_backend_goes_through_the_services_validation(operator: Client) -> None:
    refused = operator.post(f"{CHANGELIST}add/", {**FORM, "public_host": "https://eu-1"})
    assert refused.status_code == 200  # the form again, with the error
    assert "without a scheme" in refused.content.decode()
    assert not RegistryBackend.objects.filter(name="eu-1").exists()

    added = operator.post(f"{CHANGELIST}add/", FORM)
    assert added.status_code == 302, added.content.decode()[:2000]
    backend = RegistryBackend.objects.get(name="eu-1")
    assert (backend.storage, backend.labels) == ("s3", {"region": "eu-west"})


def test_drain_and_activate(operator: Client) -> None:
    default = RegistryBackend.objects.get(name=DEFAULT_BACKEND)

    drained = operator.post(
        CHANGELIST, {"action": "drain", "_selected_action": [str(default.pk)]}, follow=True
    )
    assert "draining (no new registries)" in drained.content.decode()
    assert RegistryBackend.objects.get(pk=default.pk).state == BackendState.DRAINING

    operator.post(CHANGELIST, {"action": "activate", "_selected_action": [str(default.pk)]})
    assert RegistryBackend.objects.get(pk=default.pk).state == BackendState.ACTIVE


def test_a_registry_shows_its_backend(operator: Client) -> None:
    registry = RegistryFactory(state=State.READY)

    page = operator.get(f"/admin/registries/registry/{registry.pk}/change/").content.decode()

    assert "Backend" in page
    assert ">default<" in page
