"""The one parser of the Authorization header, for every scheme the service accepts: a token
(``Bearer`` for the REST API, ``Token`` or ``Bearer`` for agents: ``authorization_secret``) and
HTTP ``Basic`` (the registry token endpoint: ``basic_password``).

Both answer None when no Authorization header was sent (the caller decides what an anonymous
request gets) and 401 with the caller's message for a header they cannot use."""

from __future__ import annotations

import base64
from collections.abc import Collection

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.request import Request


def authorization_header(request: Request | HttpRequest) -> tuple[str, str] | None:
    """The scheme (lower case) and the credentials of ``Authorization: <scheme> <credentials>``
    (as sent, possibly empty); None without the header."""
    # Read as the server passed it (a str of latin-1 characters under WSGI): DRF's
    # get_authorization_header would fail with a 500 on a character above U+00FF instead.
    raw = request.META.get("HTTP_AUTHORIZATION", "")
    header = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    return scheme.lower(), credentials


def authorization_secret(
    request: Request | HttpRequest, *, schemes: Collection[str], malformed: str
) -> str | None:
    """The secret of ``Authorization: <scheme> <secret>``; None without the header.

    A scheme not in ``schemes`` (lower case) or an empty secret is 401 ``malformed``.
    """
    header = authorization_header(request)
    if header is None:
        return None
    scheme, secret = header
    if scheme not in schemes or not secret.strip():
        raise exceptions.AuthenticationFailed(malformed)
    return secret.strip()


def basic_password(request: Request | HttpRequest, *, not_basic: str, malformed: str) -> str | None:
    """The password of ``Authorization: Basic <base64 of user:password>``; None without the
    header. The user name is ignored, and no colon means an empty password.

    Another scheme is 401 ``not_basic``; credentials that are not base64 of UTF-8 are 401
    ``malformed``.
    """
    header = authorization_header(request)
    if header is None:
        return None
    scheme, encoded = header
    if scheme != "basic":
        raise exceptions.AuthenticationFailed(not_basic)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError as exc:  # not base64 (binascii.Error), not ASCII, not UTF-8
        raise exceptions.AuthenticationFailed(malformed) from exc
    return decoded.partition(":")[2]
