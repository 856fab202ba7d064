"""The console's usage page (charts, largest repositories, quota), the inventory's read-only
pages, humanized sizes and durations, and the brand title, with Django's test client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client

from clusters.models import Organization, WebhookDelivery
from registries.models import Registry, RegistryEvent, State
from tests.registries.factories import RegistryFactory, registry_with_usage

pytestmark = pytest.mark.django_db


def usage_url(registry: Registry) -> str:
    return f"/admin/registries/registry/{registry.pk}/usage/"


def test_the_usage_page_charts_storage_and_lists_the_largest_repositories(operator) -> None:
    registry = registry_with_usage()

    response = operator.get(usage_url(registry))

    assert response.status_code == 200
    page = response.content.decode()
    assert '<svg class="usage-chart"' in page
    assert 'class="storage-line"' in page
    assert "10.2 GB" in page  # the chart's top, three days ago
    assert "79.2 kB" in page  # today: 78 000 of layers and 12 manifests of 100 bytes
    assert "No quota" in page
    # The ten largest, largest first, with their tag counts; r00 and r01 are not among them.
    table = page[page.index('id="largest-repositories"') :]
    names = [
        f'<td title="{registry.namespace}/r{index:02}">r{index:02}</td>'
        for index in range(11, 1, -1)
    ]
    positions = [table.index(name) for name in names]
    assert positions == sorted(positions)
    assert "r01</td>" not in table
    assert "<td>12.1 kB</td><td>1</td>" in table
    assert "<td>3</td><td>0</td>" in page  # today's pushes and pulls


def test_the_usage_page_of_an_empty_registry(operator) -> None:
    registry = RegistryFactory(state=State.READY)

    page = operator.get(f"{usage_url(registry)}?days=7").content.decode()

    assert "Storage, last 7 days" in page
    assert "No repositories yet." in page
    assert "No pushes or pulls in this window." in page


@pytest.mark.parametrize("object_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_registrys_usage_is_404(operator, object_id) -> None:
    assert operator.get(f"/admin/registries/registry/{object_id}/usage/").status_code == 404


def test_the_usage_page_is_for_operators_only(client: Client) -> None:
    registry = RegistryFactory(state=State.READY)
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))

    assert client.get(usage_url(registry)).status_code == 403


def test_the_registry_page_links_to_its_usage_and_shows_sizes_and_durations(operator) -> None:
    registry = registry_with_usage(2)
    Registry.objects.filter(pk=registry.pk).update(canary_latency=timedelta(microseconds=10_872))
    RegistryEvent.objects.create(
        registry=registry, from_state=State.PROVISIONING, to_state=State.READY,
        duration=timedelta(seconds=4, microseconds=500_000),
    )  # fmt: skip

    page = operator.get(f"/admin/registries/registry/{registry.pk}/change/").content.decode()
    listed = operator.get("/admin/registries/registry/").content.decode()
    events = operator.get("/admin/registries/registryevent/").content.decode()

    assert f'href="{usage_url(registry)}">3.2 kB in 2 repositories, 2 tags</a>' in page
    assert "10.9 ms" in page
    assert "4.5 s" in page
    assert "0:00:" not in page + events
    assert "3.2 kB" in listed
    assert "4.5 s" in events


def test_the_inventory_pages_show_sizes(operator) -> None:
    registry = registry_with_usage(1)

    for model in ("repository", "tag", "manifest", "usageday"):
        response = operator.get(f"/admin/registries/{model}/")
        assert response.status_code == 200, model
        assert "kB" in response.content.decode() or model == "manifest", model
    assert registry.namespace in operator.get("/admin/registries/repository/").content.decode()


def test_webhook_deliveries_show_how_long_they_took(operator) -> None:
    organization = Organization.objects.create(slug="acme", name="Acme")
    delivery = WebhookDelivery.objects.create(
        organization=organization, delivery_id="d1", event="cluster.created", payload={},
        body_sha256="0" * 64, response={}, verified_by="token",
        duration=timedelta(microseconds=10_872),
    )  # fmt: skip

    listed = operator.get("/admin/clusters/webhookdelivery/").content.decode()
    shown = operator.get(f"/admin/clusters/webhookdelivery/{delivery.pk}/change/").content.decode()

    assert "10.9 ms" in listed
    assert "10.9 ms" in shown
    assert "0:00:00.010872" not in listed + shown


def test_the_console_has_its_brand_title(operator) -> None:
    page = operator.get("/admin/").content.decode()

    assert "<title>Console | Cluster registry control plane</title>" in page
    assert "Cluster registry control plane</a>" in page
    assert "Django administration" not in page
