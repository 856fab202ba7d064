"""The HTTP measures (P1, P2, P5, P6, P7, P8): written next."""

from __future__ import annotations

from bench.measures import Measure

MEASURES: list[Measure] = []
