"""A view's ``fast`` answers Django's own 404 and 403 as the REST framework's handler does: JSON
with a ``message``, never Django's HTML error page."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.test import RequestFactory

from controlplane.api.fast_path import FastPathAPIView


class Raising(FastPathAPIView):
    error: Exception = Http404("no such thing")

    def fast(self, request: HttpRequest) -> None:
        raise self.error


@pytest.mark.parametrize(("error", "status"), [(Http404("gone"), 404), (PermissionDenied(), 403)])
def test_djangos_errors_in_fast_are_answered_as_json(error: Exception, status: int) -> None:
    view = Raising.as_view(error=error)

    response = view(RequestFactory().get("/anything"))
    response.render()

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["message"]
