"""``/v2/operator/registry-backends``: the operators' registry backends endpoints."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.models import ApiScope
from registries.models import DEFAULT_BACKEND, RegistryBackend, State
from tests.api.conftest import Api, staff
from tests.registries.factories import RegistryFactory

URL = "/v2/operator/registry-backends"
OPERATOR_SCOPES = [ApiScope.READ_REGISTRY_BACKENDS, ApiScope.WRITE_REGISTRY_BACKENDS]
pytestmark = pytest.mark.usefixtures("default_backend")


NEW = {
    "name": "eu-1",
    "api_url": "http://registry-eu-1:5000",
    "public_host": "eu-1.registry.example",
    "token_service": "registry-eu-1",
    "storage": "s3",
    "labels": {"region": "eu-west"},
    "weight": 200,
}


@pytest.fixture
def operator_api(make_api) -> Api:
    return staff(make_api(scopes=OPERATOR_SCOPES))


def names() -> list[str]:
    return list(RegistryBackend.objects.order_by("name").values_list("name", flat=True))


def test_create_list_retrieve_and_patch(operator_api: Api) -> None:
    created = operator_api.post(URL, NEW)

    assert created.status_code == 201, created.content
    body: dict[str, Any] = created.json()
    assert {k: body[k] for k in NEW} == NEW
    assert (body["state"], body["registries"], body["capacity"]) == ("active", 0, None)

    RegistryFactory(state=State.READY, backend=RegistryBackend.objects.get(name="eu-1"))
    listed = operator_api.get(URL).json()
    assert [b["name"] for b in listed] == [DEFAULT_BACKEND, "eu-1"]
    assert listed[1]["registries"] == 1
    assert listed[0]["token_service"] == "hosted-registry"  # the default follows the setting

    patched = operator_api.patch(
        f"{URL}/eu-1",
        {
            "weight": 0,
            "labels": {"region": "eu-central"},
            "state": "draining",
            "public_host": "eu.registry.example",
        },  # fmt: skip
    )
    assert patched.status_code == 200, patched.content
    shown = operator_api.get(f"{URL}/eu-1").json()
    assert (shown["weight"], shown["labels"], shown["state"], shown["public_host"]) == (
        0,
        {"region": "eu-central"},
        "draining",
        "eu.registry.example",
    )
    assert shown["hosts_changed_at"] is not None  # the reconciler republishes its URLs


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**NEW, "api_url": "registry:5000"}, "api_url"),
        ({**NEW, "public_host": "https://x"}, "public_host"),
        ({**NEW, "token_service": "hosted-registry"}, "token_service"),
        ({**NEW, "weight": -1}, "weight"),
        ({**NEW, "weight": 3_000_000_000}, "weight"),  # beyond PostgreSQL's integer: not a 500
        ({**NEW, "capacity": 2**31}, "capacity"),
        ({**NEW, "state": "gone"}, "state"),
        ({**NEW, "name": "Bad Name"}, "name"),
        ({**NEW, "id": 7}, "id"),
        ({k: v for k, v in NEW.items() if k != "api_url"}, "api_url"),
    ],
)
def test_bad_input_is_422_with_a_message_and_writes_nothing(
    operator_api: Api, body: dict[str, Any], field: str
) -> None:
    response = operator_api.post(URL, body)

    assert response.status_code == 422, response.content
    answer = response.json()
    assert answer["message"].startswith("Validation failed")
    assert field in {error["field"] for error in answer["errors"]}
    assert names() == [DEFAULT_BACKEND]


def test_a_bad_patch_writes_nothing(operator_api: Api) -> None:
    operator_api.post(URL, NEW)

    for body in (
        {"weight": 5, "name": "renamed"},
        {"weight": 5, "api_url": "nope"},
        {"weight": 3_000_000_000},
        {"capacity": 2**31},
    ):
        response = operator_api.patch(f"{URL}/eu-1", body)
        assert response.status_code == 422, response.content
        assert "message" in response.json()
    assert RegistryBackend.objects.get(name="eu-1").weight == 200


def test_an_unknown_backend_is_404(operator_api: Api) -> None:
    response = operator_api.get(f"{URL}/nowhere")

    assert (response.status_code, response.json()["message"]) == (
        404,
        "No registry backend found",
    )


def test_only_staff_tokens_with_the_scope_get_in(make_api, client) -> None:
    assert client.get(URL).status_code == 401

    tenant = make_api(scopes=OPERATOR_SCOPES)  # not staff
    refused = tenant.get(URL)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        "This endpoint is for operators: use an API token of a staff user."
    )

    reader = staff(make_api(scopes=[ApiScope.READ_REGISTRY_BACKENDS]))
    assert reader.get(URL).status_code == 200
    refused = reader.post(URL, NEW)
    assert refused.status_code == 403
    assert refused.json()["message"] == "This API token needs the write_registry_backends scope."
    assert names() == [DEFAULT_BACKEND]


def test_the_schema_documents_the_endpoints(client) -> None:
    schema = client.get("/v2/schema/", HTTP_ACCEPT="application/json").json()

    assert set(schema["paths"][URL]) >= {"get", "post"}
    assert set(schema["paths"][URL + "/{name}"]) >= {"get", "patch"}


GC_CONFIG_REFUSED = "Give the absolute path of the registry configuration its replicas run on"


def gc_config(name: str = "eu-1") -> str:
    return RegistryBackend.objects.get(name=name).gc_config


def test_the_api_sets_shows_changes_and_clears_it(operator_api: Api) -> None:
    for bad in ("registry.yml", "./etc/registry.yml", " /etc/r.yml", "/etc/r\n.yml", "/" * 513):
        refused = operator_api.post(URL, {**NEW, "gc_config": bad})
        assert refused.status_code == 422, refused.content
        assert "gc_config" in {error["field"] for error in refused.json()["errors"]}
    assert not RegistryBackend.objects.filter(name="eu-1").exists()

    created = operator_api.post(URL, {**NEW, "gc_config": "/etc/registry/eu-1.yml"})
    assert created.status_code == 201, created.content
    assert created.json()["gc_config"] == "/etc/registry/eu-1.yml"
    assert operator_api.get(f"{URL}/eu-1").json()["gc_config"] == "/etc/registry/eu-1.yml"

    refused = operator_api.patch(f"{URL}/eu-1", {"gc_config": "eu-1.yml"})
    assert refused.status_code == 422
    assert GC_CONFIG_REFUSED in refused.json()["message"] + str(refused.json()["errors"])
    assert gc_config() == "/etc/registry/eu-1.yml"

    changed = operator_api.patch(f"{URL}/eu-1", {"gc_config": "/srv/eu-1/config.yml"})
    assert changed.status_code == 200, changed.content
    assert gc_config() == "/srv/eu-1/config.yml"
    assert operator_api.patch(f"{URL}/eu-1", {"gc_config": ""}).status_code == 200
    assert gc_config() == ""
