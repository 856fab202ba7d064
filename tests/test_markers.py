"""The ``integration`` marker cannot be forgotten (tests/support/integration.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import integration
from tests.support.processes import RegistryProcess


def test_an_unmarked_test_that_starts_a_process_fails_saying_why() -> None:
    with pytest.raises(pytest.fail.Exception) as refused:
        subprocess.run([sys.executable, "-c", "pass"], check=False)

    assert "is not marked integration" in str(refused.value)
    assert "test_an_unmarked_test_that_starts_a_process_fails_saying_why" in str(refused.value)


def test_the_support_helpers_refuse_an_unmarked_test_before_starting_anything(tmp_path) -> None:
    with pytest.raises(pytest.fail.Exception, match="starts a Distribution registry but is not"):
        RegistryProcess(tmp_path).start()

    assert list(tmp_path.iterdir()) == []  # not even its configuration was written


@pytest.mark.integration
def test_a_marked_test_may_start_a_process() -> None:
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0


def test_every_test_using_a_process_starting_fixture_is_marked(request) -> None:
    """Of the tests collected with this one (none are left under ``-m "not integration"``)."""
    using = [
        item
        for item in request.session.items
        if integration.FIXTURES.intersection(getattr(item, "fixturenames", ()))
    ]
    unmarked = [item.nodeid for item in using if not integration.is_integration(item)]

    assert unmarked == []
