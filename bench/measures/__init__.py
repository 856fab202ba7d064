"""The measure contract: each module of this package exposes ``MEASURES: list[Measure]``.

A measure runs against a started :class:`bench.stack.Stack` for a number of rounds and returns a
:class:`Result`: one ratio per round (candidate against its baseline in the same round, so that
the machine's drift cancels out), a line of detail for the report (query counts, absolute
figures) and anything else in ``extra``. ``check`` says whether the result meets the goal,
``goal`` says it in words for the report.

:data:`MODULES` lists the measure modules ``python -m bench`` runs, in order; a module that
cannot be imported is reported and skipped (a measure under construction).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.stack import Stack

#: The measure modules, in the order they run.
MODULES = [
    "bench.measures.http",
    "bench.measures.registry",
    "bench.measures.tasks",
    "bench.measures.scale",
]


@dataclass
class Result:
    """What a measure found: ``ratios`` (one per round), ``detail`` (a short line for the
    report: absolute figures, query counts) and ``extra`` (anything else, kept in the JSON)."""

    ratios: list[float]
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")

    @property
    def low(self) -> float:
        return min(self.ratios) if self.ratios else float("nan")

    @property
    def high(self) -> float:
        return max(self.ratios) if self.ratios else float("nan")


@dataclass
class Measure:
    """One line of the report. ``id`` is the issue's (``P1``, ``P5 clusters``...), ``title`` what
    is measured, ``goal`` the goal in words (``≥ 0.8×, 0 SQL``), ``check`` whether a result meets
    it, ``run(stack, rounds)`` does the work. ``unit`` says what the ratio is (for the report).
    ``shortfall``: while the goal is not met, why (the profiled figures, dated) and what would
    meet it; the report lists it under "Goals not met" when a run misses the goal."""

    id: str
    title: str
    goal: str
    check: Callable[[Result], bool]
    run: Callable[[Stack, int], Result]
    unit: str = "×"
    shortfall: str = ""


def at_least(threshold: float) -> Callable[[Result], bool]:
    """A goal met when the median ratio is at least ``threshold``."""
    return lambda result: result.median >= threshold


def at_most(threshold: float) -> Callable[[Result], bool]:
    """A goal met when the median ratio is at most ``threshold``."""
    return lambda result: result.median <= threshold


def progress(message: str) -> None:
    """One line of progress on stderr (a round's figures, a seeding step), flushed at once."""
    print(f"  {message}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` in MB (``VmRSS`` of ``/proc/<pid>/status``): the
    P8 measures, gunicorn's worker here and the Celery worker in ``bench.measures.tasks``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for process {pid}")
