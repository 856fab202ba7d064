"""Sizes and durations as the console shows them (``controlplane.humanize`` and its template
filters)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.template import Context, Template

from controlplane.humanize import duration, size


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "–"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1536, "1.5 kB"),
        (999_960, "1 MB"),
        (10_000_000_000, "10 GB"),
        (10_200_000_000, "10.2 GB"),
        (10_249_999_999, "10.2 GB"),
        (3 * 10**15, "3 PB"),
        (-2_500_000, "-2.5 MB"),
    ],
)
def test_sizes_are_decimal_with_one_decimal_at_most(value, shown) -> None:
    assert size(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "–"),
        (timedelta(0), "0 µs"),
        (timedelta(microseconds=872), "872 µs"),
        (timedelta(microseconds=10_872), "10.9 ms"),
        (timedelta(seconds=4.5), "4.5 s"),
        (timedelta(seconds=59), "59 s"),
        (timedelta(seconds=60), "1 min"),
        (timedelta(seconds=125), "2 min 5 s"),
        (timedelta(hours=3, minutes=12, seconds=20), "3 h 12 min"),
        (timedelta(days=2, hours=4, minutes=59), "2 d 4 h"),
        (timedelta(days=1), "1 d"),
        (0.25, "250 ms"),
        (timedelta(seconds=-4.5), "-4.5 s"),
    ],
)
def test_durations_keep_two_units_at_most(value, shown) -> None:
    assert duration(value) == shown


def test_the_template_filters_render_the_same() -> None:
    template = Template("{% load units %}{{ bytes|size }} in {{ took|duration }}")

    rendered = template.render(Context({"bytes": 10_200_000_000, "took": timedelta(seconds=4.5)}))

    assert rendered == "10.2 GB in 4.5 s"
