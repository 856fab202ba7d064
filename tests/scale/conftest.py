"""``make scale``: options, the session's private PostgreSQL, and the report written at the end.

The run itself is tests/scale/run_scale.py, which only ``make scale`` names (its file name is
not a test module's, so ``make test`` never collects it); the fast tests of its pieces are
tests/scale/test_scale_pieces.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import PostgresServer, private_postgres


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scale")
    group.addoption("--scale-trials", type=int, default=1, help="trials (default 1)")
    group.addoption(
        "--scale-clusters", type=int, default=200, help="clusters per trial's burst (200)"
    )
    group.addoption("--scale-report", default=None, help="write the figures here (docs/SCALE.md)")


@pytest.fixture(scope="session")
def scale_postgres() -> Iterator[PostgresServer]:
    with private_postgres("controlplane-scale-pg-") as server:
        yield server
