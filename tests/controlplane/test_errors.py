"""Errors are JSON objects with a message, also outside DRF views."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.test import Client
from rest_framework import exceptions, serializers
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView


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


class Failing(APIView):
    """Raises whatever the test puts in ``error``."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []
    error: Exception = Exception()

    def get(self, request: object) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            serializers.ValidationError({"key": ["Use only letters."], "non_field_errors": ["x"]}),
            422,
            {
                "message": "Validation failed: key use only letters; x",
                "errors": [{"field": "key", "message": "Use only letters."}, {"message": "x"}],
            },
        ),
        (
            DjangoValidationError({"instance_shape": "Not a shape."}),
            422,
            {
                "message": "Validation failed: instance_shape not a shape",
                "errors": [{"field": "instance_shape", "message": "Not a shape."}],
            },
        ),
        (Http404("No cluster found"), 404, {"message": "No cluster found"}),
        (exceptions.ParseError("JSON parse error"), 400, {"message": "JSON parse error"}),
    ],
)
def test_api_errors_are_a_message_and_validation_failures_are_422(
    error: Exception, status: int, body: dict[str, object]
) -> None:
    view = Failing.as_view(error=error)
    response = view(APIRequestFactory().get("/"))
    assert response.status_code == status
    assert response.data == body
