"""``python -m bench [--rounds 3] [--only P1,P2] [--output docs/PERFORMANCE.md]``.

Starts the stack (:class:`bench.stack.Stack`), runs the measures of every module in
:data:`bench.measures.MODULES` (each module: ``MEASURES``, and optionally ``NOTES``, lines for
the report's method section), prints progress, and writes the report (:mod:`bench.report`).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import psycopg
import redis

from bench.measures import MODULES, Measure
from bench.report import Row, render
from bench.stack import Stack

ROOT = Path(__file__).resolve().parent.parent


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the hot paths against bare baselines on a production-like stack "
        "and write the report (docs/PERFORMANCE.md).",
    )
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per measure (3)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated measure ids or prefixes (P1,P5): run only those",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "docs" / "PERFORMANCE.md",
        help="the report to write (docs/PERFORMANCE.md); '-' prints it",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the working folder (logs) after the run"
    )
    arguments = parser.parse_args(argv)
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    return arguments


def load_modules() -> tuple[list[ModuleType], list[str]]:
    """The measure modules that import, and a line for each that does not."""
    modules, failures = [], []
    for name in MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            failures.append(f"{name} not run: {exc}")
    return modules, failures


def selected(measure: Measure, only: Sequence[str]) -> bool:
    return not only or any(
        measure.id == wanted or measure.id.split()[0] == wanted for wanted in only
    )


def versions(stack: Stack) -> dict[str, str]:
    """PostgreSQL, Redis, Django, gunicorn and Distribution versions, for the report."""
    found = {name: version(name) for name in ("Django", "gunicorn", "psycopg", "celery")}
    with psycopg.connect(stack.postgres_url, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        found["PostgreSQL"] = str(row[0] if row else "?")
    client = redis.Redis.from_url(stack.redis_url)
    found["Redis"] = str(client.info("server")["redis_version"])
    client.close()
    registry = shutil.which("docker-registry") or "docker-registry"
    result = subprocess.run(  # noqa: S603 - the registry the stack runs
        [registry, "--version"], capture_output=True, text=True, check=False
    )
    found["Distribution"] = (result.stdout or result.stderr).strip().split("\n")[0]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    only = [item.strip() for item in arguments.only.split(",") if item.strip()]
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C: the stack stops its processes and drops its
    # database on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    rows: list[Row] = []
    notes: list[str] = []
    stack = Stack()
    print(f"bench: working folder {stack.workdir}", file=sys.stderr, flush=True)
    with stack:
        print(f"bench: stack up at {stack.base_url}", file=sys.stderr, flush=True)
        modules, failures = load_modules()
        notes += failures
        for module in modules:
            measures: list[Measure] = [
                measure for measure in module.MEASURES if selected(measure, only)
            ]
            if measures:
                notes += list(getattr(module, "NOTES", []))
            for measure in measures:
                print(f"bench: {measure.id}: {measure.title}", file=sys.stderr, flush=True)
                began = time.monotonic()
                try:
                    result = measure.run(stack, arguments.rounds)
                except Exception as exc:  # report it and go on with the others
                    traceback.print_exc()
                    rows.append(Row(measure, None, f"{type(exc).__name__}: {exc}"))
                    continue
                rows.append(Row(measure, result))
                met = "met" if measure.check(result) else "NOT met"
                print(
                    f"bench: {measure.id}: median {result.median:.3g}{measure.unit} "
                    f"({', '.join(f'{ratio:.3g}' for ratio in result.ratios)}), goal "
                    f"{measure.goal}: {met} [{time.monotonic() - began:.0f}s] {result.detail}",
                    file=sys.stderr,
                    flush=True,
                )
        found = versions(stack)
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    report = render(
        rows,
        versions=found,
        rounds=arguments.rounds,
        command=command.strip(),
        elapsed=time.monotonic() - started,
        notes=notes,
    )
    if str(arguments.output) == "-":
        sys.stdout.write(report)
    else:
        arguments.output.write_text(report)
        print(f"bench: wrote {arguments.output}", file=sys.stderr, flush=True)
    if not arguments.keep:
        stack.cleanup()
    return 1 if any(row.result is None for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
