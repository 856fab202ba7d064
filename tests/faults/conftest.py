"""Fixtures for fault-injection tests: a private PostgreSQL per session, a whole stack per test.

Nothing here uses pytest-django's test database: every process of a stack talks to its own copy
of the session's migrated template database, on the session's private PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.report import render_report
from tests.faults.scenarios import Outcome
from tests.support.stack import PostgresServer, Stack, private_postgres

#: Short intervals and limits, so that faults play out within seconds. Every process gets them.
FAULT_ENVIRONMENT = {
    "REGISTRY_RECONCILE_INTERVAL_SECONDS": "2",
    "REGISTRY_CANARY_INTERVAL_SECONDS": "2",
    "CELERY_TASK_TIME_LIMIT": "8",
    "CELERY_TASK_SOFT_TIME_LIMIT": "6",
    "REGISTRY_PROVISION_MAX_ATTEMPTS": "3",
    "REGISTRY_PROVISION_BACKOFF_SECONDS": "0.2",
    "REGISTRY_PROVISION_BACKOFF_MAX_SECONDS": "1",
    "REGISTRY_FAILED_RETRY_AFTER_SECONDS": "1",
    "CELERY_BROKER_RECONNECT_MAX_SECONDS": "1",
    "CELERY_VISIBILITY_TIMEOUT": "60",
}

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell that the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster with a migrated template database, for the whole session.

    Its folder is made with ``mkdtemp`` and removed at the end (``private_postgres``).
    """
    with private_postgres("controlplane-faults-pg-") as server:
        yield server


@pytest.fixture
def stack_factory(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> Iterator[Callable[[], Stack]]:
    """``stack_factory()`` starts a :class:`Stack` with ``FAULT_ENVIRONMENT``; every stack is
    stopped at teardown, and the tail of every log is printed if the test failed."""
    stacks: list[Stack] = []

    def make() -> Stack:
        if not postgres_server.running:  # an earlier test stopped it and failed before restarting
            postgres_server.start()
        stack = Stack(
            tmp_path / f"stack{len(stacks) + 1}", postgres_server, environment=FAULT_ENVIRONMENT
        )
        stacks.append(stack)
        return stack.start()

    yield make
    # A stack that fails to start says so with its logs already; a failing test shows them here.
    call = request.node.stash.get(_REPORTS, {}).get("call")
    failed = call is not None and call.failed
    for stack in stacks:
        if failed:
            print(f"\n===== logs of the stack in {stack.workdir} =====\n{stack.log_tails()}")
        stack.stop()


@pytest.fixture
def stack(stack_factory: Callable[[], Stack]) -> Stack:
    """A started :class:`Stack` with ``FAULT_ENVIRONMENT``."""
    return stack_factory()


# --- trials and the report (make faults) ----------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults")
    group.addoption(
        "--fault-trials", type=int, default=1, help="trials of each fault scenario (default 1)"
    )
    group.addoption(
        "--fault-report",
        default=None,
        help="write the scenarios' figures to this Markdown file (docs/fault-report.md)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trial" in metafunc.fixturenames:
        trials = metafunc.config.getoption("--fault-trials")
        metafunc.parametrize("trial", range(1, trials + 1), ids=lambda n: f"trial{n}")


_OUTCOMES = pytest.StashKey[list[Outcome]]()


@pytest.fixture
def record_outcome(request: pytest.FixtureRequest) -> Callable[[Outcome], Outcome]:
    """Keep a scenario's outcome for the session's report, whether the test then passes or not."""

    def record(outcome: Outcome) -> Outcome:
        request.config.stash.setdefault(_OUTCOMES, []).append(outcome)
        print(f"\n{outcome}")
        return outcome

    return record


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--fault-report")
    outcomes = session.config.stash.get(_OUTCOMES, [])
    if path and outcomes:
        Path(path).write_text(render_report(outcomes, session.config.getoption("--fault-trials")))
