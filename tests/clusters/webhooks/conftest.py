"""Fixtures of the webhook tests: organization ``acme`` with one active secret, and the view's
clock stopped."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from clusters import services, webhooks
from tests.clusters.webhooks.helpers import Platform


@pytest.fixture
def platform() -> Platform:
    organization = services.organization_create(slug="acme", name="Acme")
    row, secret = webhooks.webhook_secret_create(organization=organization, description="platform")
    return Platform(organization, row, secret, now=int(time.time()))


@pytest.fixture
def frozen(platform: Platform, monkeypatch) -> Platform:
    """The view's clock stopped at ``platform.now``, so that timestamps are exact to the second."""
    clock = SimpleNamespace(time=lambda: float(platform.now))
    monkeypatch.setattr("clusters.webhooks.views.time", clock)
    return platform
