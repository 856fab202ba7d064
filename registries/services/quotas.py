"""Quotas: how much a registry may hold, and what happens when it holds more.

(A stub until the quotas land: ``usage_refresh`` calls ``quota_evaluate`` with every new figure.)
"""

from __future__ import annotations

from registries.models import Registry


def quota_evaluate(registry: Registry) -> None:
    """Judge the registry's usage against its quota (nothing yet)."""
