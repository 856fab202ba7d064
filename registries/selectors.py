"""Reads that are more than a filter."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from clusters.models import ClusterAgentToken
from clusters.selectors import agent_token_authenticate
from registries.models import Registry, RegistryEvent, RegistryQuerySet, State
from registries.tokens import Principal


def registries_due(*, now: datetime, stalled_for: timedelta) -> RegistryQuerySet:
    """Registries that a (de)provisioning attempt should move now, oldest first.

    A ``pending``, ``provisioning`` or never-swept ``deprovisioning`` row whose message never
    reached the broker (or whose retry could not be published), or whose worker died, stays put;
    nothing else would pick it up. ``stalled_for`` must exceed the longest backoff and the task's
    time limit, so that rows with a live message are left alone. A ``deprovisioning`` row that
    was swept is due again at its ``next_attempt_at``.
    """
    cutoff = now - stalled_for
    stalled = Q(state__in=[State.PENDING, State.PROVISIONING]) | Q(
        state=State.DEPROVISIONING, next_attempt_at__isnull=True
    )
    return Registry.objects.filter(
        (stalled & Q(state_changed_at__lt=cutoff))
        | Q(state=State.DEPROVISIONING, next_attempt_at__lte=now)
    ).order_by("state_changed_at")


def principal_for_agent_token(token: ClusterAgentToken) -> Principal:
    """What a cluster agent token may do in the registry: everything in its cluster's namespace
    while that registry is ready, and nothing anywhere else (nothing at all before the registry
    is ready or once it is being deprovisioned)."""
    namespace = (
        Registry.objects.ready()
        .filter(cluster_id=token.cluster_id)
        .values_list("namespace", flat=True)
        .first()
    )
    return Principal(
        subject=f"cluster:{token.cluster_id}:agent-token:{token.pk}",
        namespace=namespace,
        agent_token_id=token.pk,
    )


def principal_for_agent_secret(secret: str) -> Principal | None:
    """The principal of an active agent token's secret; None for a wrong, expired or revoked one."""
    token = agent_token_authenticate(secret)
    return None if token is None else principal_for_agent_token(token)


def principal_for_agent_token_id(token_id: uuid.UUID) -> Principal | None:
    """The principal of an agent token named by a refresh token, if that token is still active."""
    token = ClusterAgentToken.objects.active().filter(pk=token_id).first()
    return None if token is None else principal_for_agent_token(token)


@dataclass(frozen=True)
class Overview:
    """What the operators' overview page shows."""

    by_state: dict[str, int]
    provisioned: int  # registries that became ready in the window
    p50: timedelta | None
    p95: timedelta | None
    failed: list[Registry]
    newest_events: list[RegistryEvent]


def percentile(sorted_values: list[timedelta], fraction: float) -> timedelta | None:
    """The nearest-rank percentile of already sorted values; None for none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def registry_overview(*, now: datetime, window: timedelta = timedelta(hours=24)) -> Overview:
    counts = dict(Registry.objects.values_list("state").annotate(count=Count("pk")).order_by())
    durations = sorted(
        RegistryEvent.objects.filter(
            from_state=State.PROVISIONING, to_state=State.READY, created_at__gte=now - window
        ).values_list("duration", flat=True)
    )
    return Overview(
        by_state={state: counts.get(state, 0) for state in State.values},
        provisioned=len(durations),
        p50=percentile(durations, 0.50),
        p95=percentile(durations, 0.95),
        failed=list(
            Registry.objects.filter(state=State.FAILED)
            .select_related("cluster__organization")
            .order_by("-state_changed_at")[:50]
        ),
        newest_events=list(
            RegistryEvent.objects.select_related("registry").order_by("-created_at", "-pk")[:20]
        ),
    )
