"""The token endpoint's fast path writes its answer as the REST framework's JSONRenderer does."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.renderers import JSONRenderer

from registries.views import _render

ANSWERS: list[dict[str, Any]] = [
    {
        "token": "a.b.c",
        "access_token": "a.b.c",
        "expires_in": 300,
        "issued_at": "2026-01-01T00:00:00Z",
    },
    {"token": "x", "refresh_token": "y", "expires_in": 0, "issued_at": ""},
    {"text": 'é \u2028 \u2029 \x1b " \\ </script>', "n": -1.5, "none": None, "ok": True},
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_answer_is_the_renderers_bytes(answer: dict[str, Any]) -> None:
    assert _render(answer) == JSONRenderer().render(answer)
