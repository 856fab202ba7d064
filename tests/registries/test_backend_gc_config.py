"""A backend's ``gc_config`` (the registry configuration its garbage collection runs on): set
and changed from the console's form, the operators' API and ``registry_backend``, validated alike
(blank, or an absolute path: a relative one would name a different file on each worker); bad
input writes nothing; the audit row shows it."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from registries.models import RegistryBackend
from tests.registries.test_backend_admin import CHANGELIST, FORM

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_backend")]

REFUSED = "Give the absolute path of the registry configuration its replicas run on"


def gc_config(name: str = "eu-1") -> str:
    return RegistryBackend.objects.get(name=name).gc_config


def test_the_console_form_sets_and_validates_it(operator: Client) -> None:
    refused = operator.post(f"{CHANGELIST}add/", {**FORM, "gc_config": "registry.yml"})
    assert refused.status_code == 200
    assert REFUSED in refused.content.decode()
    assert not RegistryBackend.objects.filter(name="eu-1").exists()

    added = operator.post(f"{CHANGELIST}add/", {**FORM, "gc_config": "/etc/registry/eu-1.yml"})
    assert added.status_code == 302, added.content.decode()[:2000]
    backend = RegistryBackend.objects.get(name="eu-1")
    assert backend.gc_config == "/etc/registry/eu-1.yml"

    page = f"{CHANGELIST}{backend.pk}/change/"
    changed = operator.post(page, {**FORM, "gc_config": "/srv/eu-1.yml"})
    assert changed.status_code == 302, changed.content.decode()[:2000]
    assert gc_config() == "/srv/eu-1.yml"


def test_the_command_sets_validates_and_clears_it() -> None:
    call_command(
        "registry_backend", "add", "eu", "--api-url", "http://registry-eu:5000",
        "--public-host", "eu.registry.example", "--service", "registry-eu",
        "--gc-config", "/etc/registry/eu.yml", stdout=StringIO(),
    )  # fmt: skip
    assert gc_config("eu") == "/etc/registry/eu.yml"

    with pytest.raises(CommandError, match="gc_config"):
        call_command("registry_backend", "set", "eu", "--gc-config", "eu.yml")
    assert gc_config("eu") == "/etc/registry/eu.yml"

    call_command("registry_backend", "set", "eu", "--gc-config", "", stdout=StringIO())
    assert gc_config("eu") == ""
