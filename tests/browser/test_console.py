"""The operators' console in a real browser: Debian's Chromium driven by Playwright, against
the live server, with a real Celery worker and registry behind it. Screenshots go to the
git-ignored ``artifacts/browser/``."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect, sync_playwright

from clusters import services
from registries.models import Registry, State
from tests.conftest import STRICT
from tests.registries.factories import RegistryFactory, registry_with_usage
from tests.support.processes import ROOT, RegistryProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts" / "browser"
PASSWORD = "a-console-password"  # noqa: S105 - a throwaway test user's


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        message = (
            f"{CHROMIUM} is missing: `sudo apt-get install chromium` (make test does it as root)"
        )
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    # Playwright's sync API keeps an event loop running in this thread while it is open; the
    # tests' own database calls (and pytest-django's) are still synchronous.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, live_server) -> Iterator[Page]:
    User.objects.create_superuser("operator", "op@example.com", PASSWORD)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.goto("/admin/login/")
    tab.fill("#id_username", "operator")
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit]")
    expect(tab.locator("#site-name")).to_be_visible()
    yield tab
    context.close()


def failed_registry(cluster_name: str) -> Registry:
    return RegistryFactory(
        cluster__name=cluster_name,
        state=State.FAILED,
        last_error="GET http://registry/v2/ answered 503",
    )


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_an_operator_creates_a_cluster_and_a_hosted_queue_and_watches_its_registry(
    page: Page, registry_process: RegistryProcess, start_worker
) -> None:
    start_worker(REGISTRY_URL=registry_process.url, REGISTRY_PUBLIC_HOST=registry_process.host)
    services.organization_create(slug="acme", name="Acme")

    page.goto("/admin/clusters/cluster/add/")
    page.select_option("#id_organization", label="acme")
    page.fill("#id_name", "Open Source")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    page.goto("/admin/clusters/queue/add/")
    page.select_option("#id_cluster", label="acme/Open Source")
    page.fill("#id_key", "linux-small")
    page.select_option("#id_instance_shape", "LINUX_AMD64_2X4")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    page.goto("/admin/registries/registry/")
    badge = page.locator(".registry-badge").first
    for _ in range(60):  # the worker provisions; the operator reloads
        if badge.inner_text() == "Ready":
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(badge).to_have_text("Ready")
    expect(page.locator("#result_list")).to_contain_text(registry_process.host)
    screenshot(page, "registry-ready")
    assert Registry.objects.get().state == State.READY


def test_an_operator_retries_a_failed_registry(page: Page, broker_queue) -> None:
    registry = failed_registry("Flaky")

    page.goto("/admin/registries/registry/")
    expect(page.locator(".registry-failed")).to_have_text("Failed")
    page.check(f"input[name=_selected_action][value='{registry.pk}']")
    page.select_option("select[name=action]", "retry")
    page.click("button[name=index]")

    expect(page.locator(".messagelist")).to_contain_text(f"{registry.namespace}: now pending.")
    expect(page.locator(".registry-badge").first).to_have_text("Pending")
    screenshot(page, "retry-provisioning")
    registry.refresh_from_db()
    assert registry.state == State.PENDING


def test_the_overview_page_shows_the_registries(page: Page) -> None:
    failed_registry("Broken")

    page.goto("/admin/registries/registry/")
    page.click("text=Overview")

    expect(page).to_have_url(re.compile(r"/admin/registries/registry/overview/$"))
    expect(page.locator("h2").first).to_have_text("Registries by state")
    expect(page.locator("#failed-registries")).to_contain_text("answered 503")
    expect(page.locator("#provisioning-time")).to_contain_text("provisioned")
    screenshot(page, "overview")


def test_the_usage_page_charts_storage_and_lists_the_largest_repositories(page: Page) -> None:
    registry = registry_with_usage()

    page.goto(f"/admin/registries/registry/{registry.pk}/change/")
    expect(page.locator("#site-name")).to_have_text("Cluster registry control plane")
    page.click(".registry-usage-link")

    expect(page).to_have_url(re.compile(rf"/admin/registries/registry/{registry.pk}/usage/$"))
    chart = page.locator("#storage-chart svg.usage-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("polyline.storage-line")).to_have_count(1)
    expect(chart.locator("circle")).to_have_count(4)  # a point a day from the first figure
    expect(page.locator("#activity-chart svg rect")).to_have_count(1)  # today's pushes
    rows = page.locator("#largest-repositories tr")
    expect(rows).to_have_count(11)  # the header and the ten largest
    expect(rows.nth(1)).to_contain_text("r11")
    expect(rows.nth(1)).to_contain_text("12.1 kB")
    expect(page.locator("#usage-quota")).to_have_text("No quota applies to this registry.")
    screenshot(page, "registry-usage")
