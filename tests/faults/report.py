"""docs/fault-report.md: the figures of a ``make faults`` run, scenario by scenario."""

from __future__ import annotations

import platform
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.faults.scenarios import Outcome

HEADER = """# Reliability: what the fault-injection suite measured

Written by `make faults` ({when}, {trials} trial(s) of each scenario, on {machine}); do not edit
by hand. Each trial starts the whole service as real processes (a private PostgreSQL and Redis, a
`docker-registry`, the web server, a Celery worker and Celery beat), injects one fault into one
of them, and counts what became of every registry it asked for. The scenarios and what they
promise are in `tests/faults/scenarios.py`; why they recover is in [reliability.md](reliability.md).

Intervals in these runs are short so that faults play out in seconds: reconcile and canary
every 2 s, task time limit 8 s, 3 provisioning attempts with backoff from 0.2 s, a failed
registry retried 1 s after the registry answers again, broker reconnects at least every 1 s.

- **recovered**: registries that ended `ready`, their URL published, through one unbroken
  sequence of events.
- **lost**: registries asked for that did not end ready within 60 s.
- **duplicated**: extra registries for a cluster, extra provisionings, or event sequences that
  interleave.
- **time to recover**: from the end of the fault (the process back) until the last registry was
  ready; **bound** is what the scenario promises (none: only that it recovers).

"""
COLUMNS = [
    "scenario", "trials", "passed", "registries", "recovered", "lost", "duplicated",
    "time to recover: median / max (s)", "bound (s)",
]  # fmt: skip
TABLE_HEAD = f"| {' | '.join(COLUMNS)} |\n|{'---|' * len(COLUMNS)}\n"


def render_report(outcomes: list[Outcome], trials: int) -> str:
    by_scenario: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_scenario[outcome.scenario].append(outcome)
    rows = []
    for scenario, runs in by_scenario.items():
        times = [o.seconds_to_recover for o in runs if o.seconds_to_recover >= 0]
        bound = runs[0].bound
        rows.append(
            f"| {scenario} | {len(runs)} | {sum(o.passed for o in runs)} "
            f"| {sum(o.expected for o in runs)} | {sum(o.recovered for o in runs)} "
            f"| {sum(o.lost for o in runs)} | {sum(o.duplicated for o in runs)} "
            f"| {_seconds(times)} | {'–' if bound is None else f'{bound:g}'} |"
        )
    details = ["", "## Per trial", ""]
    for scenario, runs in by_scenario.items():
        details.append(f"### {scenario}")
        details.append("")
        for index, outcome in enumerate(runs, 1):
            facts = "; ".join(f"{key}: {value}" for key, value in outcome.facts.items())
            problems = f" **Problems:** {'; '.join(outcome.problems)}" if outcome.problems else ""
            details.append(
                f"{index}. {'passed' if outcome.passed else 'FAILED'} in "
                f"{outcome.seconds_to_recover:.2f} s: {facts}.{problems}"
            )
        details.append("")
    header = HEADER.format(
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        trials=trials,
        machine=f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
    )
    return header + TABLE_HEAD + "\n".join(rows) + "\n" + "\n".join(details)


def _seconds(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"
