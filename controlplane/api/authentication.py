"""The one parser of the Authorization header, for every scheme the service accepts: a token
(``Bearer`` for the REST API, ``Token`` or ``Bearer`` for agents: ``authorization_secret``) and
HTTP ``Basic`` (the registry token endpoint: ``basic_password``).

Both answer None when no Authorization header was sent (the caller decides what an anonymous
request gets) and 401 with the caller's message for a header they cannot use."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection

from rest_framework import authentication, exceptions
from rest_framework.request import Request


def authorization_header(request: Request) -> tuple[str, str] | None:
    """The scheme (lower case) and the credentials of ``Authorization: <scheme> <credentials>``
    (as sent, possibly empty); None without the header."""
    header = authentication.get_authorization_header(request).decode("latin-1")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    return scheme.lower(), credentials


def authorization_secret(
    request: Request, *, schemes: Collection[str], malformed: str
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


def basic_password(request: Request, *, not_basic: str, malformed: str) -> str | None:
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
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise exceptions.AuthenticationFailed(malformed) from exc
    return decoded.partition(":")[2]
