"""``docs/PERFORMANCE.md``: the table of results, the machine, how to rerun, the method."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.measures import Measure, Result

#: Notes on method, printed under the table (the measures' own notes come from their modules).
METHOD = """\
- **Production-like**: gunicorn with `deploy/gunicorn.conf.py`, sync workers × 2, DEBUG off,
  PostgreSQL and Redis on the host, a real Distribution registry with token authentication, JSON
  logs and gunicorn's access log on, Prometheus' multiprocess files, production's persistent
  database connections (`DATABASE_CONN_MAX_AGE`, 600 s). Two departures: workers are not recycled
  (`GUNICORN_MAX_REQUESTS=0`) so that every round measures the same warm processes, and the API
  rate limits are set out of reach.
- **Baselines in the same run**: the bare view (`bench/views.py`: a plain Django view through
  the same middleware, answering a small JSON document; it exists only under `bench.settings`)
  and, for the worker measures, a no-op Celery task (`bench/tasks.py`). Each round measures the
  baseline and the candidate back to back (A/B, interleaved), so drift of a shared machine hits
  both; a ratio is per round, the table shows the median and the spread of the rounds.
- **Ratios**: throughput ratios (P1, P2, P5, P6) are candidate requests/s / bare requests/s,
  so above 1 is faster than the bare view; time ratios (P3, P4, P7, P9) are candidate time /
  baseline time, so below is better. P4b, P8 and P10 are absolute figures.
- **Query counts** are counted in the bench's own process, through Django's WSGI handler and
  `CaptureQueriesContext`, on the same database and settings, after one warming request.
- **No timed assertion in the test suite**: these figures live here only; the query counts are
  pinned in `tests/*/query_counts.json`.
"""


@dataclass
class Row:
    """One measure and what it found (``error`` instead of a result if it failed)."""

    measure: Measure
    result: Result | None
    error: str = ""


def _figure(value: float, unit: str) -> str:
    if math.isnan(value):
        return "–"
    if unit == "×":
        return f"{value:.2f}×"
    if value == int(value):
        return f"{int(value)} {unit.strip()}"
    return f"{value:.1f} {unit.strip()}"


def _table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| # | measure | median | spread (min–max) | rounds | goal | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        measure = row.measure
        if row.result is None:
            lines.append(
                f"| {measure.id} | {measure.title} | – | – | 0 | {measure.goal} | "
                f"**not measured**: {row.error} |"
            )
            continue
        result = row.result
        spread = f"{_figure(result.low, measure.unit)} – {_figure(result.high, measure.unit)}"
        met = "yes" if measure.check(result) else "**no**"
        lines.append(
            f"| {measure.id} | {measure.title} | {_figure(result.median, measure.unit)} | "
            f"{spread} | {len(result.ratios)} | {measure.goal} | {met} |"
        )
    return lines


def _shortfalls(rows: Sequence[Row]) -> list[str]:
    """The section "Goals not met": each measured row that missed its goal, with its measure's
    shortfall; rows that share one shortfall (the four P3 lines) are listed together."""
    missed: dict[str, list[str]] = {}
    for row in rows:
        if row.result is not None and not row.measure.check(row.result):
            shortfall = row.measure.shortfall or "Not analysed yet."
            missed.setdefault(shortfall, []).append(row.measure.id)
    if not missed:
        return []
    lines = ["## Goals not met", ""]
    for shortfall, ids in missed.items():
        lines.append(f"- **{', '.join(ids)}**: {shortfall}")
    return [*lines, ""]


def _details(rows: Sequence[Row]) -> list[str]:
    lines: list[str] = []
    for row in rows:
        if row.result is not None and row.result.detail:
            lines.append(f"- **{row.measure.id}** {row.result.detail}")
        elif row.error:
            lines.append(f"- **{row.measure.id}** failed: {row.error}")
    return lines


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine(versions: dict[str, str]) -> list[str]:
    """The machine: CPUs, memory, OS, and the versions of what was measured."""
    system = os.uname()  # not platform.uname(): its processor field runs `uname -p`
    cpuinfo = _read("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
    ]
    meminfo = _read("/proc/meminfo").split()
    memory = f"{int(meminfo[1]) / 1024 / 1024:.1f} GB" if meminfo[:1] == ["MemTotal:"] else "?"
    lines = [
        f"- CPU: {os.cpu_count()} × {models[0] if models else system.machine}",
        f"- memory: {memory}",
        f"- OS: {system.sysname} {system.release} {system.machine}",
        f"- Python {platform.python_version()}",
    ]
    lines += [f"- {name} {version}" for name, version in versions.items()]
    return lines


def render(
    rows: Sequence[Row],
    *,
    versions: dict[str, str],
    rounds: int,
    command: str,
    elapsed: float,
    notes: Sequence[str] = (),
    when: datetime | None = None,
) -> str:
    """The whole of ``docs/PERFORMANCE.md``."""
    when = when or datetime.now(UTC)
    parts = [
        "# Performance",
        "",
        "Generated by `make bench` (`python -m bench`, code in [bench/](../bench/)); do not edit "
        "by hand. The hot paths of issue 15 as ratios to bare baselines measured in the same "
        "run, on the machine below.",
        "",
        f"Measured {when:%Y-%m-%d %H:%M} UTC, {rounds} rounds, {elapsed / 60:.1f} minutes.",
        "",
        *_table(rows),
        "",
        *_shortfalls(rows),
        "## Details",
        "",
        *_details(rows),
        "",
        "## The machine",
        "",
        *machine(versions),
        "",
        "## Rerunning it",
        "",
        "```sh",
        "make bench                       # every measure, 3 rounds, writes docs/PERFORMANCE.md",
        ".venv/bin/python -m bench --rounds 5 --only P1,P2 --output /tmp/perf.md",
        "```",
        "",
        "It needs the host's PostgreSQL (`BENCH_POSTGRES_URL`, default "
        "`postgres://postgres@127.0.0.1:5432/postgres`: it creates and drops a database "
        "`cp_bench_run_<random>`) and Redis (`BENCH_REDIS_URL`, default "
        "`redis://127.0.0.1:6379/15`, flushed), `docker-registry` and `skopeo`. "
        f"This run: `{command}`.",
        "",
        "## Method",
        "",
        METHOD.rstrip(),
        *[f"- {note}" for note in notes],
        "",
    ]
    return "\n".join(parts)
