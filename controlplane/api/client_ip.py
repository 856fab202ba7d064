"""The caller's address, for the checks that depend on it (agent token IP allow-lists).

Without a proxy in front (``TRUSTED_PROXY_COUNT=0``, the default) it is the connection's
``REMOTE_ADDR``, and ``X-Forwarded-For`` is ignored: any client can write that header. Behind
``TRUSTED_PROXY_COUNT`` = N proxies that each append the address they received the request from,
the caller is the N-th address from the right of ``X-Forwarded-For``: the rightmost N entries
were written by our proxies, everything left of them by whoever sent the request. A request
with fewer entries than that did not come through every proxy; it gets the leftmost address
it has, which is one of our proxies' (so an allow-list refuses it), never one it could choose.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


def client_ip(request: Any) -> str:
    """The address of the client of ``request`` (a Django ``HttpRequest`` or a DRF ``Request``)
    as ``TRUSTED_PROXY_COUNT`` says to read it; "" when the server gave none."""
    meta: dict[str, Any] = request.META
    remote = str(meta.get("REMOTE_ADDR") or "").strip()
    trusted: int = settings.TRUSTED_PROXY_COUNT
    if trusted <= 0:
        return remote
    forwarded = [entry.strip() for entry in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    # The connection's address is the last hop: the chain is the header, then REMOTE_ADDR.
    chain = [entry for entry in forwarded if entry] + ([remote] if remote else [])
    if not chain:
        return ""
    return chain[max(0, len(chain) - 1 - trusted)]
