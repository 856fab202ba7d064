"""Reads that are more than a filter."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from clusters.models import ClusterAgentToken
from clusters.selectors import agent_token_authenticate
from registries.models import Registry
from registries.tokens import Principal


def registries_stalled(*, stalled_for: timedelta) -> list[Registry]:
    """Registries owed (de)provisioning that nobody has moved for ``stalled_for``.

    A ``pending`` or ``deprovisioning`` row whose message never reached the broker (or whose
    retry could not be published), or a row whose worker died, stays put; nothing else would
    pick it up. ``stalled_for`` must exceed the longest backoff and the task's time limit, so
    that rows with a live message are left alone.
    """
    cutoff = timezone.now() - stalled_for
    owed = Registry.objects.owed_provisioning() | Registry.objects.owed_deprovisioning()
    return list(owed.filter(state_changed_at__lt=cutoff).order_by("state_changed_at"))


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
