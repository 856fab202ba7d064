"""Log lines carry the logger's name (controlplane/logging.py), and operators filter on it: the
services kept the names they logged under before they became packages (``clusters.services``,
``registries.services``), whichever module of the package an event now comes from."""

from __future__ import annotations

import importlib

import pytest

SERVICE_LOGGERS = {
    "clusters.services.clusters": "clusters.services",
    "clusters.services.queues": "clusters.services",
    "clusters.services.credentials": "clusters.services",
    "clusters.services.environment": "clusters.services",
    "clusters.webhooks.delivery": "clusters.services",
    "clusters.webhooks.signing": "clusters.services",
    "registries.services.lifecycle": "registries.services",
    "registries.services.provisioning": "registries.services",
    "registries.services.deprovisioning": "registries.services",
    "registries.services.health": "registries.services",
    "registries.reconciler.repairs": "registries.services",
    "registries.reconciler": "registries.reconciler",
}


@pytest.mark.parametrize(("module", "name"), SERVICE_LOGGERS.items())
def test_services_log_under_the_name_they_always_had(module: str, name: str) -> None:
    assert importlib.import_module(module).logger.name == name
