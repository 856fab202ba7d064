"""The console and the API docs as production serves them: gunicorn (``deploy/gunicorn.conf.py``),
DEBUG off, the static files collected by ``collectstatic`` and served by WhiteNoise, the
Content-Security-Policy on. Debian's Chromium (Playwright) checks that the admin's stylesheets
load and apply, and that Swagger UI's scripts run, with no request refused by the policy.
Screenshots go to the git-ignored ``artifacts/browser/``."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect

from tests.browser.test_console import ARTIFACTS, PASSWORD, browser  # noqa: F401 - a fixture
from tests.support.processes import ROOT, Gunicorns, database_url_for_children, free_port
from tests.support.stack import inherited_environment

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Only the admin's base.css gives these: --secondary (#417690) is the header's background.
ADMIN_HEADER_BACKGROUND = "rgb(65, 118, 144)"


def production_environment(tmp_path: Path) -> dict[str, str]:
    """The variables a production web process has (DJANGO_DEBUG unset: off), on the tests'
    database, with its static files collected into the test's folder."""
    return {
        **inherited_environment(),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url_for_children(),
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:1/0",
        "REGISTRY_TOKEN_REALM": "http://127.0.0.1:1/registry/token",
        "REGISTRY_KEYS_DIR": str(tmp_path / "keys"),
        "CONTROLPLANE_VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "PYTHONUNBUFFERED": "1",
        # Plain HTTP here, with no TLS terminator in front: Chromium drops Secure cookies sent
        # over http://, so the session and CSRF cookies are not marked Secure for this test.
        "DJANGO_SESSION_COOKIE_SECURE": "false",
        "DJANGO_CSRF_COOKIE_SECURE": "false",
    }


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[str]:
    """``collectstatic``, then gunicorn on a free port; its base URL."""
    environment = production_environment(tmp_path)
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    port = free_port()
    environment |= {
        "PORT": str(port),
        "GUNICORN_BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
    }
    servers = Gunicorns(tmp_path)
    try:
        yield servers.start(environment, ready="/admin/login/", timeout=30)
    finally:
        servers.stop()


@pytest.fixture
def production_page(browser: Browser, gunicorn: str) -> Iterator[tuple[Page, list[str]]]:  # noqa: F811
    """A tab on the gunicorn server, and every console error and refused request it logs."""
    context = browser.new_context(base_url=gunicorn, viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # A refused script, style or request is an error here ("Refused to ... because it
        # violates the following Content Security Policy directive"). Failed loads are counted by
        # response() instead: the browser's own /favicon.ico request is not the page's.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def response(answer: Response) -> None:
        if answer.status >= 400:
            problems.append(f"{answer.status} {answer.url}")

    tab.on("console", console)
    tab.on("response", response)
    yield tab, problems
    context.close()


def test_the_admin_is_styled_with_debug_off_under_gunicorn(
    gunicorn: str, production_page: tuple[Page, list[str]]
) -> None:
    page, problems = production_page
    # DEBUG is off: an unknown URL is the JSON 404, not Django's debug page listing every route.
    unknown = requests.get(f"{gunicorn}/no-such-page/", timeout=5)
    assert unknown.status_code == 404
    assert unknown.headers["Content-Type"].startswith("application/json")

    with page.expect_response(lambda r: "/static/admin/css/base." in r.url) as stylesheet:
        login = page.goto("/admin/login/")
    assert login is not None
    assert "default-src 'self'" in login.headers["content-security-policy"]
    # collectstatic's hashed name, served by WhiteNoise, cacheable for good.
    assert stylesheet.value.status == 200
    assert stylesheet.value.url.endswith(".css")
    assert "/static/admin/css/base.css" not in stylesheet.value.url
    assert "immutable" in stylesheet.value.headers["cache-control"]
    header_background = page.evaluate(
        "getComputedStyle(document.querySelector('#header')).backgroundColor"
    )
    assert header_background == ADMIN_HEADER_BACKGROUND
    assert page.evaluate(
        "[...document.styleSheets].some(s => s.href && s.href.includes('/admin/css/base.')"
        " && s.cssRules.length > 100)"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "production-login.png"), full_page=True)

    # Hashed as production checks it (the test settings' MD5 hasher is not in production's list).
    operator = User.objects.create_superuser("operator", "op@example.com")
    operator.password = PBKDF2PasswordHasher().encode(PASSWORD, secrets.token_hex(8))
    operator.save(update_fields=["password"])
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("operator")
    page.goto("/admin/registries/registry/")
    expect(page.locator("#changelist")).to_be_visible()
    header_background = page.evaluate(
        "getComputedStyle(document.querySelector('#header')).backgroundColor"
    )
    assert header_background == ADMIN_HEADER_BACKGROUND
    page.screenshot(path=str(ARTIFACTS / "production-registries.png"), full_page=True)
    assert problems == []


def test_the_api_docs_run_under_the_content_security_policy(
    gunicorn: str, production_page: tuple[Page, list[str]]
) -> None:
    page, problems = production_page
    answer = page.goto("/v2/docs/")
    assert answer is not None
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    # Swagger UI's bundle and its start-up script (a file, not inline) ran: the page is built.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Cluster registry")
    expect(page.locator(".opblock").first).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "production-api-docs.png"))
    assert problems == []
