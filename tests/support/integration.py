"""The ``integration`` marker, made hard to forget.

A test that starts a process (a Distribution registry, a Celery worker, skopeo or buildah, a
private PostgreSQL or Redis, any subprocess), the live server or a browser is an integration
test: ``pytest -m "not integration"`` (``make test-fast``) leaves it out, so that the fast loop
stays fast and needs none of those programs. Three things keep the marker honest:

- ``tests/conftest.py`` marks every test that uses one of :data:`FIXTURES` (directly or through
  another fixture) in ``pytest_collection_modifyitems``;
- modules that are wholly integration say so with ``pytestmark``;
- while an unmarked test sets up or runs, starting a process fails it: the helpers of
  tests/support call :func:`require_integration` with what they start, and any other
  ``subprocess`` call is refused by :func:`guard` (it patches the one place where CPython's
  ``subprocess.Popen`` forks, which ``subprocess.run`` and asyncio's subprocesses, playwright's
  driver included, go through).

Teardown is not guarded: stopping a session's processes (``pg_ctl stop``) may fall to whichever
test ran last.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

MARKER = "integration"

#: Fixtures that start a process, the live server or a browser.
FIXTURES = frozenset(
    {
        "live_server",  # pytest-django's server thread, and a transactional database
        "registry_process",  # tests/conftest.py: docker-registry
        "start_worker",  # tests/conftest.py: a Celery worker
        "container_tools",  # tests/conftest.py: skopeo and buildah (tests/registries/conftest.py)
        "browser",  # tests/browser: chromium through playwright
        "postgres_server",  # tests/faults: a private PostgreSQL
        "stack_factory",  # tests/faults: a whole stack of processes
    }
)

#: The test being set up or run, if it is not marked integration (None otherwise, and during
#: teardown).
_unmarked: pytest.Item | None = None


def is_integration(item: pytest.Item) -> bool:
    return item.get_closest_marker(MARKER) is not None


def mark_items(items: list[pytest.Item]) -> None:
    """Mark every test that uses one of :data:`FIXTURES`."""
    for item in items:
        if FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(MARKER)


def refusal(item: pytest.Item, what: str) -> str:
    return (
        f"{item.nodeid} starts {what} but is not marked {MARKER}: add @pytest.mark.{MARKER} "
        "to the test (or pytestmark to its module), or use a fixture of "
        "tests/support/integration.py's FIXTURES, so that `pytest -m 'not integration'` leaves "
        "it out."
    )


def require_integration(what: str) -> None:
    """Fail the current test if it is not marked integration: it is about to start ``what``."""
    if _unmarked is not None:
        pytest.fail(refusal(_unmarked, what), pytrace=False)


@contextmanager
def guard(item: pytest.Item) -> Iterator[None]:
    """While ``item`` sets up or runs: if it is not an integration test, refuse any process."""
    global _unmarked
    if is_integration(item):
        yield
        return

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        pytest.fail(refusal(item, f"a process ({args!r})"), pytrace=False)

    _unmarked = item
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(subprocess.Popen, "_execute_child", refuse)
            yield
    finally:
        _unmarked = None
