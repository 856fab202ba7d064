"""Registries' entry points name the actor of their writes (docs/audit.md, "Actors"): its REST
API and operators' endpoints the API token, its console pages the staff user, its commands the
command; each write records exactly one row."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

from clusters.audit import AuditEvent
from clusters.models import ApiScope
from registries.models import Registry, State
from tests.api.conftest import staff
from tests.registries.factories import RegistryFactory
from tests.support.processes import closed_url

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_backend")]


def _actor(row: AuditEvent) -> tuple[str, str]:
    return row.actor_type, row.actor_uuid


def test_the_registry_api_retry_is_the_tokens(api) -> None:
    cluster = api.post("/clusters", {"name": "Open Source"}).json()
    registry = RegistryFactory(cluster_id=cluster["id"], state=State.FAILED)

    response = api.post(f"/clusters/{cluster['id']}/registry/retry")

    assert response.status_code == 200, response.content
    [row] = AuditEvent.objects.filter(type="REGISTRY_RETRIED")
    assert _actor(row) == ("API_TOKEN", str(api.token.pk))
    assert (row.subject_uuid, row.organization_id) == (str(registry.pk), api.organization.pk)
    assert row.data == {"state": ["failed", "pending"]}


def test_the_operators_endpoints_are_the_tokens_and_no_organizations(make_api) -> None:
    operator = staff(make_api(scopes=[ApiScope.WRITE_REGISTRY_BACKENDS]))
    body = {"name": "eu-1", "api_url": "http://eu-1:5000", "public_host": "eu-1.example",
            "token_service": "registry-eu-1"}  # fmt: skip

    assert operator.post("/v2/operator/registry-backends", body).status_code == 201

    [row] = AuditEvent.objects.filter(type="REGISTRY_BACKEND_CREATED")
    assert _actor(row) == ("API_TOKEN", str(operator.token.pk))
    assert (row.subject_uuid, row.organization_id) == ("eu-1", None)
    assert row.data["public_host"] == "eu-1.example"


def test_the_registry_console_actions_are_the_staff_users(operator: Client, settings) -> None:
    settings.REGISTRY_URL = closed_url()
    registry = RegistryFactory(state=State.READY)

    for action in ("verify", "deprovision"):
        operator.post(
            "/admin/registries/registry/",
            {"action": action, "_selected_action": [str(registry.pk)], "confirmed": "yes"},
        )

    rows = AuditEvent.objects.filter(subject_type="REGISTRY").order_by("occurred_at")
    assert [row.type for row in rows] == ["REGISTRY_VERIFIED", "REGISTRY_DEPROVISIONED"]
    assert {(row.actor_type, row.actor_name) for row in rows} == {("USER", "operator")}
    assert {row.organization_id for row in rows} == {registry.cluster.organization_id}
    assert Registry.objects.get(pk=registry.pk).state == State.DEPROVISIONING


def test_the_backend_console_is_the_staff_users(operator: Client) -> None:
    response = operator.post(
        "/admin/registries/registrybackend/add/",
        {"name": "eu-2", "api_url": "http://eu-2:5000", "public_host": "eu-2.example",
         "token_service": "registry-eu-2", "storage": "filesystem", "labels": "{}",
         "weight": "100", "capacity": "", "state": "active"},
    )  # fmt: skip

    assert response.status_code == 302, response.content
    [row] = AuditEvent.objects.filter(type="REGISTRY_BACKEND_CREATED")
    assert (row.actor_type, row.actor_name, row.context["type"]) == (
        "USER", "operator", "WebContext"
    )  # fmt: skip


def test_a_registries_command_is_its_own(db) -> None:
    call_command(
        "registry_backend", "add", "eu-3", "--api-url", "http://eu-3:5000",
        "--public-host", "eu-3.example", "--service", "registry-eu-3",
    )  # fmt: skip

    [row] = AuditEvent.objects.filter(type="REGISTRY_BACKEND_CREATED")
    assert row.actor_type == "SYSTEM"
    assert row.actor_name.startswith("manage.py registry_backend")
    assert row.context["command"] == "registry_backend"
