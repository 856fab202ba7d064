"""Reading the registry tokens the control plane signs, as the registry would."""

from __future__ import annotations

from typing import Any

import jwt
from django.conf import settings

from registries.key_store import key_store


def access_claims(token: str) -> dict[str, Any]:
    """The claims of an access token, checked against the current signing key and the service."""
    return jwt.decode(
        token,
        key_store().load().current.public_key,
        algorithms=["ES256"],
        audience=settings.REGISTRY_TOKEN_SERVICE,
    )
