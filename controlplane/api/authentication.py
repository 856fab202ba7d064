"""The part of token authentication every scheme shares: the secret in the Authorization
header."""

from __future__ import annotations

from collections.abc import Collection

from rest_framework import authentication, exceptions
from rest_framework.request import Request


def authorization_secret(
    request: Request, *, schemes: Collection[str], malformed: str
) -> str | None:
    """The secret of ``Authorization: <scheme> <secret>``; None without the header.

    A scheme not in ``schemes`` (lower case) or an empty secret is 401 ``malformed``.
    """
    header = authentication.get_authorization_header(request).decode("latin-1")
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() not in schemes or not secret.strip():
        raise exceptions.AuthenticationFailed(malformed)
    return secret.strip()
