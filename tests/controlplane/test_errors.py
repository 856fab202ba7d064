"""Errors are JSON objects with a message, also outside DRF views."""

from __future__ import annotations

import pytest
from django.test import Client


def test_an_unknown_path_is_a_json_404(client: Client, settings) -> None:
    settings.DEBUG = False
    response = client.get("/v2/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


@pytest.mark.django_db
def test_the_root_answers_like_buildkite(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json()["message"] == "🛠"
    assert isinstance(response.json()["timestamp"], int)
