"""``/v2/operator/registry-signing-keys``: operators list the signing keys and rotate them."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusters.models import ApiScope
from registries.key_store import key_store
from registries.models import TokenSigningKey
from tests.api.conftest import Api, staff

URL = "/v2/operator/registry-signing-keys"
ROTATE = f"{URL}/rotate"
SCOPES = [ApiScope.READ_REGISTRY_KEYS, ApiScope.WRITE_REGISTRY_KEYS]


@pytest.fixture
def operator_api(make_api) -> Api:
    return staff(make_api(scopes=SCOPES))


def test_rotate_issues_a_new_current_key_that_this_process_signs_with(operator_api: Api) -> None:
    before = operator_api.get(URL).json()
    assert [k["role"] for k in before] == ["current"]
    assert set(before[0]) == {"kid", "role", "issued_at", "expires_at", "accepted_until"}

    rotated = operator_api.post(ROTATE, {})

    assert rotated.status_code == 201, rotated.content
    new = rotated.json()
    assert new["role"] == "current"
    assert new["kid"] != before[0]["kid"]
    assert key_store().load().current.kid == new["kid"]
    listed = operator_api.get(URL).json()
    assert [(k["kid"], k["role"]) for k in listed] == [
        (new["kid"], "current"),
        (before[0]["kid"], "accepted"),  # its refresh tokens stay valid for their lifetime
    ]
    assert "private" not in rotated.content.decode().lower()


def test_a_process_without_the_ca_key_answers_409_with_where_to_rotate(
    operator_api: Api, settings, tmp_path: Path
) -> None:
    settings.REGISTRY_KEYS_DIR = str(tmp_path / "no-ca-key")
    count = TokenSigningKey.objects.count()

    refused = operator_api.post(ROTATE, {})

    assert refused.status_code == 409
    assert "holds no ca.key" in refused.json()["message"]
    assert TokenSigningKey.objects.count() == count  # nothing written


@pytest.mark.parametrize(
    ("scopes", "is_staff", "method", "code"),
    [
        ([ApiScope.READ_REGISTRY_KEYS], True, "post", 403),  # reading is not rotating
        ([ApiScope.WRITE_REGISTRY_KEYS], True, "get", 403),
        (SCOPES, False, "post", 403),  # an organization's user, whatever its scopes
        (SCOPES, False, "get", 403),
        ([ApiScope.WRITE_REGISTRY_BACKENDS], True, "post", 403),  # another operator's scope
    ],
)
def test_rotation_needs_a_staff_token_with_the_method_scope(
    make_api, scopes: list[str], is_staff: bool, method: str, code: int
) -> None:
    api = make_api(scopes=scopes)
    if is_staff:
        staff(api)
    count = TokenSigningKey.objects.count()

    response = api.post(ROTATE, {}) if method == "post" else api.get(URL)

    assert response.status_code == code
    assert response.json()["message"]
    assert TokenSigningKey.objects.count() == count


def test_without_a_token_it_is_401(client) -> None:
    response = client.post(ROTATE)
    assert response.status_code == 401
    assert response.json()["message"]
