"""Reads that are more than a filter."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from registries.models import Registry


def registries_stalled(*, stalled_for: timedelta) -> list[Registry]:
    """Registries owed provisioning that nobody has moved for ``stalled_for``.

    A ``pending`` row whose message never reached the broker (or whose retry could not be
    published), or a ``provisioning`` row whose worker died, stays put; nothing else would pick
    it up. ``stalled_for`` must exceed the longest backoff and the task's time limit, so that
    rows with a live message are left alone.
    """
    cutoff = timezone.now() - stalled_for
    return list(
        Registry.objects.owed_provisioning()
        .filter(state_changed_at__lt=cutoff)
        .order_by("state_changed_at")
    )
