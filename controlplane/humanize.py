"""Sizes and durations as people read them, for the console (the REST API keeps raw numbers).

Sizes are decimal, as registries and disks count them (1 GB = 10^9 bytes): ``10.2 GB``, so
that the quota's message ``quota exceeded: 10.2 GB of 10 GB`` reads the same everywhere.
Durations keep two units at most: ``10.9 ms``, ``4.5 s``, ``2 min 5 s``, ``3 h 12 min``,
``2 d 4 h`` (never ``0:00:00.010872``).
"""

from __future__ import annotations

from datetime import timedelta

SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
#: What ``size`` and ``duration`` show for no value.
NONE = "–"


def _number(value: float, digits: int = 1) -> str:
    """At most ``digits`` decimals, without trailing zeros: ``10.2``, ``10``."""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").removesuffix(".") if "." in text else text


def size(value: int | None, digits: int = 1) -> str:
    """``10_200_000_000`` -> ``10.2 GB``; bytes below 1 kB as they are (``999 B``); at most
    ``digits`` decimals."""
    if value is None:
        return NONE
    sign, amount = ("-" if value < 0 else ""), float(abs(value))
    unit = 0
    # Round first, so that 999_960 shows as 1 MB rather than 1000 kB.
    while unit < len(SIZE_UNITS) - 1 and round(amount, digits) >= 1000:
        amount /= 1000
        unit += 1
    if unit == 0:
        return f"{sign}{int(amount)} B"
    return f"{sign}{_number(amount, digits)} {SIZE_UNITS[unit]}"


_STEPS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def duration(value: timedelta | float | None) -> str:
    """A ``timedelta`` (or seconds) in at most two units: ``872 µs``, ``10.9 ms``, ``4.5 s``,
    ``2 min 5 s``, ``3 h 12 min``, ``2 d 4 h``."""
    if value is None:
        return NONE
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        return f"-{duration(-seconds)}"
    if seconds < 0.001:
        return f"{round(seconds * 1_000_000)} µs"
    if seconds < 1:
        return f"{_number(seconds * 1000)} ms"
    if seconds < 60:
        return f"{_number(seconds)} s"
    whole = round(seconds)
    # The largest unit that fits, then the next one down (``_STEPS`` ends at seconds).
    index = next(i for i, (step, _) in enumerate(_STEPS) if whole >= step)
    (step, unit), (smaller_step, smaller_unit) = _STEPS[index], _STEPS[index + 1]
    first, rest = divmod(whole, step)
    second = rest // smaller_step
    return f"{first} {unit} {second} {smaller_unit}" if second else f"{first} {unit}"
