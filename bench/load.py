"""The HTTP load and what the server pays for it (:mod:`bench.measures.http`, and any measure
against the bare view).

Load comes from ``wrk`` (C, one thread, ``CONNECTIONS`` keep-alive connections, runs of
``SLICE_SECONDS``): it costs the shared CPUs far less than the server it loads, so the figures
are the server's. gunicorn's sync workers close every connection after one answer, so each
request also pays a TCP connection, for the bare view and the candidate alike. A round is
``SLICES`` short runs of each side, alternating; the ratio is candidate requests per second /
bare requests per second. Query counts are taken in the driver process through Django's own WSGI
handler, so that ``close_old_connections`` runs and the per-request health-check ping
(``CONN_HEALTH_CHECKS``) is counted as production pays it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import statistics
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from bench.measures import progress

if TYPE_CHECKING:
    from bench.stack import Stack

#: A round: ``SLICES`` runs of ``SLICE_SECONDS`` for each side, alternating, so that a shared
#: machine's drift hits both sides alike; ``wrk``'s connections (more than gunicorn's 2 workers,
#: so that neither waits for the client).
SLICES = 3
SLICE_SECONDS = 1.0
CONNECTIONS = 4
#: A short run before the rounds, per target: imports, caches and connections warm.
WARM_SECONDS = 1.0
BARE_PATH = "/bench/bare"


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Target:
    """One request, repeated: the method, path, headers and body, and the status expected."""

    name: str
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    status: int = 200


BARE = Target("bare", BARE_PATH)

_LUA_STRING = re.compile(r"[^\w .,:;=/+\-{}\[\]\"@*()!?#%&<>|~^$]")


def _lua(text: str) -> str:
    """A Lua string literal for ``text`` (decimal escapes for anything unusual)."""
    escaped = _LUA_STRING.sub(
        lambda match: "".join(f"\\{byte}" for byte in match[0].encode()), text
    )
    return '"' + escaped.replace('"', '\\"') + '"'


def _script(stack: Stack, target: Target) -> Path:
    lines = [f"wrk.method = {_lua(target.method)}"]
    lines += [
        f"wrk.headers[{_lua(name)}] = {_lua(value)}" for name, value in target.headers.items()
    ]
    if target.body:
        lines.append(f"wrk.body = {_lua(target.body.decode())}")
    path = stack.workdir / "wrk" / f"{target.name}.lua"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _check(stack: Stack, target: Target) -> None:
    """One request by ``requests`` first: the target answers what the measure expects."""
    response = requests.request(
        target.method,
        stack.base_url + target.path,
        headers=dict(target.headers),
        data=target.body or None,
        timeout=10,
    )
    if response.status_code != target.status:
        raise RuntimeError(
            f"{target.name}: {target.method} {target.path} answered {response.status_code}, "
            f"not {target.status}: {response.text[:300]}"
        )


_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(stack: Stack, target: Target, seconds: float = SLICE_SECONDS) -> tuple[int, float]:
    """Requests answered and seconds taken by ``wrk`` on ``target``; raises if any answer was
    not of the expected kind (2xx, or 4xx for a refusal)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed: `sudo apt-get install wrk` (make bench does)")
    result = subprocess.run(  # noqa: S603 - wrk on our own server
        [binary, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s",
         "-s", str(_script(stack, target)), stack.base_url + target.path],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    output = result.stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    if done is None:
        raise RuntimeError(f"wrk printed no count:\n{output}{result.stderr}")
    requests_done, elapsed = int(done[1]), float(done[2]) * _DURATION_UNITS[done[3]]
    unexpected = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(unexpected[1]) if unexpected else 0
    wanted_non_2xx = requests_done if target.status >= 400 else 0
    if non_2xx != wanted_non_2xx or "Socket errors" in output:
        raise RuntimeError(
            f"{target.name}: {non_2xx} of {requests_done} answers were not 2xx/3xx "
            f"(expected {wanted_non_2xx}), or connections failed:\n{output}"
        )
    return requests_done, elapsed


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (``/proc/<pid>/stat``);
    a process gone meanwhile counts nothing."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


def server_pids(stack: Stack) -> list[int]:
    """gunicorn's workers and the PostgreSQL backends connected to the stack's database (the
    bench's own query excepted): the processes whose CPU a request costs on this host."""
    import psycopg

    with psycopg.connect(stack.database_url, autocommit=True, connect_timeout=5) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [*stack.gunicorn_pids(), *(int(row[0]) for row in rows)]


@dataclass
class _Side:
    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0


@dataclass
class Throughput:
    """A/B rounds of a candidate against the bare view: each side's requests per second, and
    the ratio of each round (the median of its pairs' ratios: a burst of the shared machine's
    other load that hits one run of one pair moves the round's ratio little). ``cpu_ratios``:
    per round, the bare view's server CPU per request / the candidate's, which other load on
    the machine hardly moves."""

    bare: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    bare_cpu_ms: list[float] = field(default_factory=list)
    candidate_cpu_ms: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)

    def cpu(self) -> str:
        """The CPU figures for a measure's detail."""
        return (
            f"server CPU a request {statistics.median(self.candidate_cpu_ms):.2f} ms vs bare "
            f"{statistics.median(self.bare_cpu_ms):.2f} ms (gunicorn worker + PostgreSQL "
            f"backend), CPU ratio {statistics.median(self.cpu_ratios):.2f}× "
            f"({', '.join(f'{ratio:.2f}' for ratio in self.cpu_ratios)})"
        )


def ab_rounds(stack: Stack, target: Target, rounds: int) -> Throughput:
    """Interleaved rounds of the bare view and ``target``: each round is ``SLICES`` pairs of
    runs, alternating which side goes first."""
    _check(stack, BARE)
    _check(stack, target)
    wrk(stack, BARE, WARM_SECONDS)
    wrk(stack, target, WARM_SECONDS)
    pids = server_pids(stack)  # after the warm-up: every worker holds its connection
    found = Throughput()
    for index in range(rounds):
        sides = {BARE.name: _Side(), target.name: _Side()}
        pairs = []
        for piece in range(SLICES):
            order = [BARE, target] if (index + piece) % 2 == 0 else [target, BARE]
            rates = {}
            for each in order:
                cpu_before = cpu_seconds(pids)
                requests_done, elapsed = wrk(stack, each)
                side = sides[each.name]
                side.cpu += cpu_seconds(pids) - cpu_before
                side.requests += requests_done
                side.seconds += elapsed
                rates[each.name] = requests_done / elapsed
            pairs.append(rates[target.name] / rates[BARE.name])
        bare, candidate = sides[BARE.name], sides[target.name]
        found.bare.append(bare.requests / bare.seconds)
        found.candidate.append(candidate.requests / candidate.seconds)
        found.ratios.append(statistics.median(pairs))
        found.bare_cpu_ms.append(1000 * bare.cpu / bare.requests)
        found.candidate_cpu_ms.append(1000 * candidate.cpu / candidate.requests)
        found.cpu_ratios.append(found.bare_cpu_ms[-1] / found.candidate_cpu_ms[-1])
        progress(
            f"{target.name} round {index + 1}: {found.candidate[-1]:.0f} req/s vs bare "
            f"{found.bare[-1]:.0f} req/s; pairs {', '.join(f'{pair:.2f}' for pair in pairs)} "
            f"= {found.ratios[-1]:.2f}×; CPU a request {found.candidate_cpu_ms[-1]:.2f} ms vs "
            f"{found.bare_cpu_ms[-1]:.2f} ms = {found.cpu_ratios[-1]:.2f}×"
        )
    return found


def rates(found: Throughput) -> str:
    candidate, bare = statistics.median(found.candidate), statistics.median(found.bare)
    return f"{candidate:.0f} req/s vs bare {bare:.0f} req/s (medians of the rounds); {found.cpu()}"


# --- query counts in the driver process ------------------------------------------------------


@dataclass
class Queries:
    """What one request cost the database, counted in the driver process."""

    status: int
    statements: list[str]
    pings: int

    def __str__(self) -> str:
        ping = f" + {self.pings} health-check ping" if self.pings else ""
        return f"{len(self.statements)} SQL{ping}"


def count_queries(
    path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> Queries:
    """Run one request through Django's WSGI handler in this process (Django configured by
    ``Stack.django``); the SQL it ran and the health-check pings (``is_usable`` calls)."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = urlsplit(path)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": url.path,
        "QUERY_STRING": url.query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    statuses: list[str] = []
    pings = 0

    def start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        statuses.append(status)

    is_usable = connection.is_usable

    def counted_is_usable() -> bool:
        nonlocal pings
        pings += 1
        return is_usable()

    connection.is_usable = counted_is_usable  # type: ignore[method-assign]
    try:
        with CaptureQueriesContext(connection) as captured:
            response = WSGIHandler()(environ, start_response)
            b"".join(response)
            response.close()  # request_finished: what production runs after each request
    finally:
        del connection.is_usable
    return Queries(
        int(statuses[0].split()[0]), [q["sql"] for q in captured.captured_queries], pings
    )


def warm_queries(path: str, headers: Mapping[str, str]) -> Queries:
    """The queries of the second of two identical requests (the first warms the caches)."""
    count_queries(path, headers=headers)
    found = count_queries(path, headers=headers)
    if found.status != 200:
        raise RuntimeError(f"GET {path} answered {found.status} in the driver process")
    return found
