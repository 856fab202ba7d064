"""The one place settings are read from the environment.

Every variable has an embedded default that works on a developer machine, unless it is marked
``required_in_production``: then a missing value stops the process at start-up when
``DJANGO_DEBUG`` is not ``true``, instead of failing later on the first request that needs it.
The settings read every variable first and call :func:`raise_for_missing` last, so one message
names every missing variable at once. ``.env.example`` lists every variable read here.

DEBUG is off unless ``DJANGO_DEBUG=true``: a process started with nothing set is a production
process (secret key, hosts, database and broker required), never one that lists every route on
an unknown URL. The development stack (``make run``) and the tests set it.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")


def _parse_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def loopback_address(raw: str) -> str:
    """``host:port`` on the loopback interface (``127.0.0.0/8``, ``[::1]`` or ``localhost``);
    ValueError for anything else, such as Distribution's debug listener on a public address."""
    host, separator, port = raw.strip().rpartition(":")
    if not separator or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{raw!r} is not host:port")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        loopback = bare == "localhost" or ipaddress.ip_address(bare).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{raw!r} is not on the loopback interface: use 127.0.0.1:PORT (or [::1]:PORT), so "
            "that only the registry's own host reaches it"
        )
    return raw.strip()


def string_map(raw: str) -> dict[str, str]:
    """A JSON object of strings (labels, as ``{"region": "eu-west"}``); ValueError otherwise,
    so that a malformed value stops every process at start-up with its name, rather than each
    placement later."""
    value = json.loads(raw)  # JSONDecodeError is a ValueError
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise ValueError('expected a JSON object of strings, such as {"region": "eu-west"}')
    return value


def env(
    name: str,
    default: T,
    cast: Callable[[str], T] | None = None,
    *,
    required_in_production: bool = False,
) -> T:
    """Return the environment variable ``name`` converted by ``cast``, or ``default``.

    With ``required_in_production``, a missing value is an error when ``DJANGO_DEBUG`` is false:
    the default is for a developer machine only. The error waits for :func:`raise_for_missing`,
    so that it names every missing variable; until then the default stands in.
    """
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if required_in_production and not DEBUG and name not in _missing:
            _missing.append(name)
        return default
    if cast is None:
        return raw  # type: ignore[return-value]
    try:
        return cast(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not valid: {exc}") from exc


def env_bool(name: str, default: bool) -> bool:
    return env(name, default, _parse_bool)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """An integer; with ``minimum``, a smaller one stops the process at start-up (a lifetime of
    0 or less would make every credential expire as it is made)."""

    def cast(raw: str) -> int:
        value = int(raw)
        if minimum is not None and value < minimum:
            raise ValueError(f"must be an integer of at least {minimum}")
        return value

    return env(name, default, cast)


def env_float(name: str, default: float) -> float:
    return env(name, default, float)


def env_list(name: str, default: list[str], *, required_in_production: bool = False) -> list[str]:
    return env(name, default, _parse_list, required_in_production=required_in_production)


def missing_required() -> list[str]:
    """The variables required in production that were read and found missing, in order."""
    return list(_missing)


def raise_for_missing() -> None:
    """ImproperlyConfigured naming every required variable found missing so far, if any."""
    if not _missing:
        return
    names = _missing[0] if len(_missing) == 1 else f"{', '.join(_missing[:-1])} and {_missing[-1]}"
    raise ImproperlyConfigured(
        f"{names} must be set when DJANGO_DEBUG is false (see .env.example). On a development "
        "machine, set DJANGO_DEBUG=true instead (make run and make demo do)."
    )


_missing: list[str] = []
# DEBUG is read first and by itself: it decides how every other variable falls back. Only
# DJANGO_DEBUG=true (or 1, yes, on) turns it on; unset is production.
DEBUG: bool = _parse_bool(os.environ.get("DJANGO_DEBUG", "false"))
