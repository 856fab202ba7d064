"""What a ``make scale`` trial measured, and docs/SCALE.md rendered from the trials.

Pure: no process, no database (tests/scale/test_scale_pieces.py renders a report from made-up
trials).
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Fault:
    """One fault injected mid-burst, and how the service recovered from it."""

    what: str  # "SIGKILL api1"
    at: float  # seconds into the burst
    progress: int  # clusters whose requests had all been answered by then
    #: Seconds from the fault until the service answered again (through the load balancer) or
    #: another process took over; None where it never did within the trial.
    back: float | None = None
    #: Seconds from the fault until the process, started again, was ready (None: not restarted).
    restarted: float | None = None
    note: str = ""


@dataclass
class Trial:
    """One trial's figures (see docs/SCALE.md's column notes)."""

    number: int
    clusters: int = 0  # clusters whose first hosted queue was created (201, maybe after retries)
    recovered: int = 0
    lost: int = 0
    duplicated: int = 0
    provisionings: int = 0
    requests: int = 0  # POSTs the burst sent, retries included
    retried: int = 0  # of which answered 502/503/504 or a broken connection, and sent again
    failed: int = 0  # operations that still failed after the client's retries
    #: What the load balancer's access log says: requests it moved to the other backend after
    #: a refused connection or an idempotent request's failure (invisible to clients), and its
    #: 502 answers (a POST or PATCH in flight on a killed process), by method.
    failovers: int = 0
    bad_gateway: dict[str, int] = field(default_factory=dict)
    burst_seconds: float = 0.0
    #: Seconds from the last fault to the last registry ready (-1: not all ready in time).
    last_ready: float = -1.0
    placements: dict[str, int] = field(default_factory=dict)  # backend -> registries
    weights: dict[str, int] = field(default_factory=dict)  # backend -> weight
    pushed: int = 0
    pulled: int = 0
    push_pull_seconds: float = 0.0
    refresh_tokens: int = 0  # refresh tokens issued before the rotation ...
    refresh_accepted: int = 0  # ... exchanged after it, at each API process and the LB
    refresh_exchanges: int = 0
    unauthorized: int = 0  # 401s in any token flow after the rotation (push, pull, refresh)
    faults: list[Fault] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.clusters > 0
            and (self.recovered, self.lost, self.duplicated) == (self.clusters, 0, 0)
            and self.provisionings == self.clusters
            and self.pushed == self.pulled == self.clusters
            and self.refresh_accepted == self.refresh_exchanges
            and self.unauthorized == 0
            and self.failed == 0
            and self.last_ready >= 0
            and not self.problems
        )

    def summary(self) -> str:
        """The trial's one-line result, printed as it ends."""
        return (
            f"trial {self.number}: {'passed' if self.passed else 'FAILED'}: "
            f"{self.clusters} clusters, {self.recovered} ready, {self.lost} lost, "
            f"{self.duplicated} duplicated, {self.provisionings} provisionings; "
            f"{self.retried}/{self.requests} POSTs retried, {self.failed} failed; load balancer "
            f"{self.failovers} failovers, 502s {self.bad_gateway or 'none'}; "
            f"pushed {self.pushed}, pulled {self.pulled}; refresh tokens "
            f"{self.refresh_accepted}/{self.refresh_exchanges} accepted; {self.unauthorized} "
            f"401s; last ready {self.last_ready:.1f} s after the last fault; placements "
            f"{self.placements}"
        )


#: How far a backend's share of the placements may stray from its share of the weights: weighted
#: rendezvous hashing of random cluster ids is a draw per registry (200 draws at 2:1 have a
#: standard deviation of 3.3 points), so 10 points is three of them.
PLACEMENT_TOLERANCE = 0.10


def placement_problems(placements: dict[str, int], weights: dict[str, int]) -> list[str]:
    """A line per backend whose share of ``placements`` is not its share of the active
    ``weights`` within PLACEMENT_TOLERANCE (and per registry placed on an unknown backend)."""
    total, weight = sum(placements.values()), sum(weights.values())
    if not total or not weight:
        return ["no placements" if not total else "no backend weights"]
    problems = [f"{count} registries on {name}, which has no weight"
                for name, count in placements.items() if name not in weights]  # fmt: skip
    for name, share in weights.items():
        expected, found = share / weight, placements.get(name, 0) / total
        if abs(found - expected) > PLACEMENT_TOLERANCE:
            problems.append(f"{name}: {found:.0%} of the registries, {expected:.0%} of the weight")
    return problems


def spread(placements: dict[str, int], weights: dict[str, int]) -> str:
    """``name n (x%, weight w)`` per backend."""
    total = sum(placements.values()) or 1
    return ", ".join(
        f"{name} {count} ({100 * count / total:.0f}%, weight {weights.get(name, '?')})"
        for name, count in sorted(placements.items())
    )


def _seconds(values: Sequence[float | None]) -> str:
    known = [value for value in values if value is not None and value >= 0]
    if not known:
        return "–"
    missing = len(values) - len(known)
    text = f"{statistics.median(known):.2f} / {max(known):.2f}"
    return text + (f" ({missing} never)" if missing else "")


HEADER = """# Scale: a fault run across replicas

Written by `make scale` ({when}, {trials} trial(s), {clusters} clusters each, on {machine}); do not
edit by hand. What it promises and why it recovers: [reliability.md](reliability.md); the
single-process scenarios: [fault-report.md](fault-report.md).

## Topology

Every trial starts, as real processes on 127.0.0.1 with the production settings
(`DJANGO_DEBUG=false`, configured by environment variables only), each with its own log:

{topology}

## What each trial does

{steps}

## Results

"""


def render_report(
    trials: Sequence[Trial], *, clusters: int, topology: Sequence[str], steps: Sequence[str]
) -> str:
    header = HEADER.format(
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        trials=len(trials),
        clusters=clusters,
        machine=f"{platform.system()} {platform.machine()}, {_cores()} cores, Python "
        f"{platform.python_version()}",
        topology="\n".join(f"- {line}" for line in topology),
        steps="\n".join(f"{n}. {line}" for n, line in enumerate(steps, 1)),
    )
    columns = [
        "trial", "result", "clusters", "ready", "lost", "duplicated", "provisionings",
        "POSTs (retried / failed)", "LB failovers / 502s", "burst (s)",
        "last ready after last fault (s)", "push / pull", "refresh tokens accepted", "401s",
        "placements",
    ]  # fmt: skip
    rows = [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}"]
    for trial in trials:
        cells: list[Any] = [
            trial.number, "passed" if trial.passed else "**FAILED**", trial.clusters,
            trial.recovered, trial.lost, trial.duplicated, trial.provisionings,
            f"{trial.requests} ({trial.retried} / {trial.failed})",
            f"{trial.failovers} / {sum(trial.bad_gateway.values())}", f"{trial.burst_seconds:.1f}",
            f"{trial.last_ready:.1f}", f"{trial.pushed} / {trial.pulled}",
            f"{trial.refresh_accepted} / {trial.refresh_exchanges}", trial.unauthorized,
            spread(trial.placements, trial.weights),
        ]  # fmt: skip
        rows.append(f"| {' | '.join(str(cell) for cell in cells)} |")
    total = _totals(trials)
    faults = _faults(trials)
    details = _details(trials)
    return header + "\n".join(rows) + "\n\n" + total + "\n" + faults + "\n" + details


def _totals(trials: Sequence[Trial]) -> str:
    def added(name: str) -> int:
        return sum(getattr(trial, name) for trial in trials)

    placements: dict[str, int] = {}
    for trial in trials:
        for name, count in trial.placements.items():
            placements[name] = placements.get(name, 0) + count
    weights = trials[0].weights if trials else {}
    return (
        "**Totals**: "
        f"{sum(trial.passed for trial in trials)} of {len(trials)} trials passed; "
        f"{added('clusters')} clusters, {added('recovered')} registries ready, "
        f"{added('lost')} lost, {added('duplicated')} duplicated, {added('provisionings')} "
        f"provisionings; {added('requests')} POSTs through the load balancer, "
        f"{added('retried')} retried by the client, {added('failed')} failed; "
        f"{added('failovers')} requests moved to the other backend by the load balancer, "
        f"{sum(sum(trial.bad_gateway.values()) for trial in trials)} answered 502; "
        f"{added('pushed')} pushes and {added('pulled')} pulls; "
        f"{added('refresh_accepted')} of {added('refresh_exchanges')} refresh-token exchanges "
        f"after the rotation accepted; {added('unauthorized')} tokens refused (401); "
        f"placements {spread(placements, weights)}; last registry ready "
        f"{_seconds([trial.last_ready for trial in trials])} s (median / max) after the last "
        "fault.\n"
    )


def _faults(trials: Sequence[Trial]) -> str:
    by_fault: dict[str, list[Fault]] = {}
    for trial in trials:
        for fault in trial.faults:
            by_fault.setdefault(fault.what, []).append(fault)
    lines = [
        "## Recovery per fault (median / max over the trials, seconds)",
        "",
        "| fault | injected at (s into the burst) | service back / taken over | restarted process ready |",  # noqa: E501
        "|---|---|---|---|",
    ]
    for what, faults in by_fault.items():
        lines.append(
            f"| {what} | {_seconds([f.at for f in faults])} | {_seconds([f.back for f in faults])} "
            f"| {_seconds([f.restarted for f in faults])} |"
        )
    return "\n".join(lines) + "\n"


def _details(trials: Sequence[Trial]) -> str:
    lines = ["## Per trial", ""]
    for trial in trials:
        lines.append(f"### Trial {trial.number}")
        lines.append("")
        lines.append(f"{trial.summary()}.")
        lines.append("")
        for fault in trial.faults:
            back = "never" if fault.back is None else f"{fault.back:.2f} s"
            restarted = "not restarted" if fault.restarted is None else f"{fault.restarted:.2f} s"
            note = f"; {fault.note}" if fault.note else ""
            lines.append(
                f"- {fault.what} at {fault.at:.1f} s ({fault.progress} clusters done): back "
                f"{back}, restarted {restarted}{note}"
            )
        for problem in trial.problems[:20]:
            lines.append(f"- **problem**: {problem}")
        lines.append("")
    return "\n".join(lines)


def _cores() -> int:
    import os

    return os.cpu_count() or 0
