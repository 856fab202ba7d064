"""Fault injection with real processes (see ``scenarios``): no registry is lost or duplicated,
and each recovers within what the design promises. ``make faults`` runs more trials and writes
docs/fault-report.md from them."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import SCENARIOS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_registry_is_lost_or_duplicated(scenario, trial, stack_factory, record_outcome) -> None:
    outcome = record_outcome(SCENARIOS[scenario](stack_factory))

    assert outcome.problems == []
    assert (outcome.recovered, outcome.lost, outcome.duplicated) == (outcome.expected, 0, 0)
    if outcome.bound is not None:
        assert 0 <= outcome.seconds_to_recover <= outcome.bound
