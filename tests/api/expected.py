"""What the REST API is expected to show, for the tests' exact comparisons."""

from __future__ import annotations

import base64
import re
from typing import Any

#: A timestamp as the API writes it: UTC, with milliseconds.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def user_body(api: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The API token's owner as a response shows them; ``body`` gives the computed parts (the
    avatar URL and the join date)."""
    user = api.token.user
    return {
        "id": str(user.pk),
        "graphql_id": base64.b64encode(f"User---{user.pk}".encode()).decode(),
        "name": "Sam Kim",
        "email": "sam@example.com",
        "avatar_url": body["avatar_url"],
        "created_at": body["created_at"],
    }
