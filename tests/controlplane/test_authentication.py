"""The one Authorization-header parser (controlplane/api/authentication.py), as every endpoint
that takes a credential meets it: a header it cannot use is 401 with the endpoint's message,
never a 500, whatever characters it holds."""

from __future__ import annotations

import pytest

from tests.clusters.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

#: Characters above U+00FF: a WSGI server never passes them (headers are latin-1), the test
#: client does; DRF's own header reader fails on them with a UnicodeEncodeError.
WIDE = "\u20ac\u0100"


@pytest.mark.parametrize(
    ("path", "authorization", "message"),
    [
        (
            "/registry/token?service=hosted-registry",
            f"Bearer {WIDE}",
            "Send HTTP Basic credentials: any user name, and a cluster agent token as password.",
        ),
        (
            "/registry/token?service=hosted-registry",
            f"Basic {WIDE}",
            "Malformed HTTP Basic credentials.",
        ),
        (
            "/v2/organizations/acme/clusters",
            f"Bearer {WIDE}",
            "Invalid or revoked API access token.",
        ),
        (
            "/v2/organizations/acme/clusters",
            f"{WIDE} x",
            "Send an API access token as 'Authorization: Bearer <token>'.",
        ),
        ("/v3/agent/environment", f"Token {WIDE}", "Invalid, expired or revoked agent token."),
    ],
    ids=[
        "token endpoint, not basic",
        "token endpoint, basic",
        "rest api",
        "rest api scheme",
        "agent",
    ],
)
def test_a_header_with_characters_above_latin_1_is_401(
    client, path: str, authorization: str, message: str
) -> None:
    OrganizationFactory(slug="acme")

    response = client.get(path, HTTP_AUTHORIZATION=authorization)

    assert response.status_code == 401
    assert response.json()["message"] == message
