"""Reads that are more than a filter."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone

from clusters.interface import (
    AgentEnvironmentVariable,
    AgentTokenFacts,
    Cluster,
    ClusterAgentToken,
    Queue,
)
from controlplane import hotcache
from controlplane.credentials import secret_hash
from registries.keys import longest_token_lifetime
from registries.models import (
    JOB_CREDENTIAL_PREFIX,
    OWED_STATES,
    REGISTRY_URL_VARIABLE,
    JobCredential,
    Registry,
    RegistryBackend,
    RegistryEvent,
    RegistryQuerySet,
    State,
    TokenSigningKey,
)
from registries.tokens import Principal

_Q = TypeVar("_Q", bound=QuerySet[Any])


def registries_due(*, now: datetime, interval: timedelta) -> RegistryQuerySet:
    """Registries owed an attempt that nothing has moved by their due time, oldest first:
    ``pending`` ones whose message was lost (or never sent), ``provisioning`` and
    ``deprovisioning`` ones whose attempt's lease expired (a dead worker, a database outage),
    retries whose message was lost, and swept ``deprovisioning`` ones whose final sweep is due.
    A row without a due time (written before there were any) is due once unchanged for
    ``interval``. Reads the partial index ``registry_attempt_due`` (owed rows only)."""
    due = Q(next_attempt_at__lte=now) | Q(
        next_attempt_at__isnull=True, state_changed_at__lte=now - interval
    )
    return Registry.objects.filter(due, state__in=OWED_STATES).order_by("state_changed_at")


@dataclass(frozen=True)
class KeyWindow:
    """A range of keys, which a sweep reads instead of a whole table: the keys after ``after``
    (from the first when None) through ``through`` (to the last when None). ``EVERY_ROW`` is
    the whole table."""

    after: str | None = None
    through: str | None = None

    def of(self, queryset: _Q, key: str = "pk") -> _Q:
        """``queryset``'s rows whose ``key`` is in the window (no row whose key is NULL, unless
        the window is ``EVERY_ROW``)."""
        if self.after is not None:
            queryset = queryset.filter(**{f"{key}__gt": self.after})
        if self.through is not None:
            queryset = queryset.filter(**{f"{key}__lte": self.through})
        return queryset

    @property
    def next_after(self) -> str | None:
        """Where the next window starts: after this one, or at the first key again once this
        one ran to the end."""
        return self.through


EVERY_ROW = KeyWindow()


def clusters_window(*, after: str | None, size: int) -> KeyWindow:
    """The next ``size`` cluster ids after ``after`` (one index-only read of at most ``size + 1``
    keys): the window of the reconciler's sweeps, which read the clusters, their queues,
    registries and variables of those ids only. The last window of a sweep runs to the end,
    so with at most ``size`` clusters every window is the whole table."""
    keys = KeyWindow(after=after).of(Cluster.objects.order_by("pk")).values_list("pk", flat=True)
    # The size-th key, if another follows it; otherwise the window runs to the end.
    last_and_next = list(keys[size - 1 : size + 1])
    through = str(last_and_next[0]) if len(last_and_next) == 2 else None
    return KeyWindow(after=after, through=through)


def clusters_owed_a_registry(window: KeyWindow = EVERY_ROW) -> QuerySet[Cluster]:
    """Clusters (of ``window``) with a hosted queue and no registry (the signal that creates it
    was lost, or the queue was written around the services), by id. Every table it joins is
    limited to the window's ids, so that it reads that many rows of each, whichever plan."""
    registries = window.of(Registry.objects.filter(cluster=OuterRef("pk")), key="cluster")
    hosted = window.of(Queue.objects.hosted().filter(cluster=OuterRef("pk")), key="cluster")
    return (
        window.of(Cluster.objects.all())
        .filter(~Exists(registries), Exists(hosted))
        .select_related("organization")  # the namespace starts with its slug
        .order_by("pk")
    )


def registries_unpublished(window: KeyWindow = EVERY_ROW) -> RegistryQuerySet:
    """Ready registries (of ``window``'s clusters) whose cluster's jobs do not receive their URL
    (the variable is missing or holds another value), by cluster id."""
    published = window.of(
        AgentEnvironmentVariable.objects.filter(
            cluster=OuterRef("cluster"), name=REGISTRY_URL_VARIABLE, value=OuterRef("url")
        ),
        key="cluster",
    )
    return (
        window.of(Registry.objects.ready(), key="cluster")
        .filter(cluster__isnull=False)
        .exclude(Exists(published))
        .order_by("cluster_id")  # not "cluster": that would order (and join) by its name
    )


def registries_failed_transiently(*, before: datetime) -> RegistryQuerySet:
    """Failed registries whose last error was the registry not answering, failed before
    ``before``: worth an automatic retry once the registry answers again. Reads the partial
    index ``registry_failed_transient``."""
    return Registry.objects.filter(
        state=State.FAILED, failure_transient=True, state_changed_at__lte=before
    ).order_by("state_changed_at")


def registries_canary_due(*, now: datetime) -> RegistryQuerySet:
    """Ready registries whose namespace is due for a canary of its own, longest due first (the
    partial index ``registry_canary_due``)."""
    return Registry.objects.ready().filter(canary_due_at__lte=now).order_by("canary_due_at", "pk")


def cluster_registry(cluster: Cluster) -> RegistryQuerySet:
    """The cluster's registry: at most one (a deleted cluster's registry has no cluster). The
    REST API passes a cluster its base view found, so the organization is already checked."""
    return Registry.objects.filter(cluster=cluster)


def registry_queryset(cluster: Cluster) -> RegistryQuerySet:
    """The cluster's registry with its events oldest first, in two queries."""
    events = RegistryEvent.objects.order_by("created_at", "id")
    return cluster_registry(cluster).prefetch_related(Prefetch("events", queryset=events))


def _principal(
    token: AgentTokenFacts,
    namespace: str | None,
    job_credential_id: uuid.UUID | None = None,
    job_credential_expires_at: datetime | None = None,
    *,
    service: str | None = None,
    push_refused: str | None = None,
    pushes_refused_until: datetime | None = None,
) -> Principal:
    """What a cluster agent token (or a job credential made from it) may do in the registry:
    everything in its cluster's namespace while that registry is ready (``namespace``, None
    otherwise), and nothing anywhere else (nothing at all before the registry is ready or once it
    is being deprovisioned), until the earlier of their expiries."""
    subject = f"cluster:{token.cluster_id}:agent-token:{token.pk}"
    expiries = [token.expires_at]
    if job_credential_id is not None:
        subject += f":job-credential:{job_credential_id}"
        expiries.append(job_credential_expires_at)
    return Principal(
        subject=subject,
        namespace=namespace,
        service=service or None,
        agent_token_id=token.pk,
        job_credential_id=job_credential_id,
        expires_at=min((e for e in expiries if e is not None), default=None),
        push_refused=push_refused or "",
        pushes_refused_until=pushes_refused_until,
    )


@dataclass(frozen=True)
class RegistryCredential:
    """A credential the token endpoint accepted: what it may do in the registry (``principal``),
    and the agent token behind it (whose IP allow-list applies to a job credential made from it
    too, and is checked on every request)."""

    agent_token: AgentTokenFacts
    principal: Principal


#: Credentials the token endpoint accepted, by what was presented: ``("secret", hash of the
#: secret)`` or ``("refresh", agent token id, job credential id)``. Only those whose registry is
#: ready: one that is not yet gets an empty grant, and is read again on the next request.
_CREDENTIALS: hotcache.HotCache[RegistryCredential] = hotcache.HotCache("registry-credentials")


def _ready_namespace(cluster_id: str, column: str = "namespace") -> Subquery:
    return Subquery(
        Registry.objects.ready().filter(cluster_id=OuterRef(cluster_id)).values(column)[:1]
    )


def _ready(cluster_id: str) -> dict[str, Subquery]:
    """What the token endpoint's one query reads of the cluster's ready registry (each None
    without one): its ``namespace``, the ``service`` of its backend ("" for one that follows
    the settings), its ``push_refused`` (its quota) and its backend's maintenance window."""
    return {
        "namespace": _ready_namespace(cluster_id),
        "service": _ready_namespace(cluster_id, "backend__token_service"),
        "push_refused": _ready_namespace(cluster_id, "push_refused"),
        "window": _ready_namespace(cluster_id, "backend__pushes_refused_until"),
    }


def _agent_token_credential(**lookup: object) -> RegistryCredential | None:
    """The active agent token matching ``lookup``, with its cluster's ready namespace: one
    query."""
    ready = _ready("cluster_id")
    rows = (
        ClusterAgentToken.objects.active()
        .filter(**lookup)
        .annotate(**ready)
        .values_list("pk", "cluster_id", "allowed_ip_addresses", "expires_at", *ready)
        .order_by()[:1]
    )
    for token_id, cluster_id, allowed, expires_at, namespace, service, refused, window in rows:
        token = AgentTokenFacts(token_id, cluster_id, allowed, expires_at)
        principal = _principal(
            token, namespace, service=service, push_refused=refused, pushes_refused_until=window
        )
        return RegistryCredential(token, principal)
    return None


def _usable_job_credential(**lookup: object) -> RegistryCredential | None:
    """The usable job credential matching ``lookup`` (unexpired, unrevoked, its agent token
    active), with its agent token and its cluster's ready namespace: one query (never the
    cluster row)."""
    ready = _ready("agent_token__cluster_id")
    rows = (
        JobCredential.objects.usable()
        .filter(**lookup)
        .annotate(**ready)
        .values_list(
            "pk",
            "expires_at",
            "agent_token_id",
            "agent_token__cluster_id",
            "agent_token__allowed_ip_addresses",
            "agent_token__expires_at",
            *ready,
        )
        .order_by()[:1]
    )
    for pk, expires_at, token_id, cluster_id, allowed, token_expires, *found in rows:
        token = AgentTokenFacts(token_id, cluster_id, allowed, token_expires)
        namespace, service, refused, window = found
        principal = _principal(
            token, namespace, pk, expires_at, service=service, push_refused=refused,
            pushes_refused_until=window,
        )  # fmt: skip
        return RegistryCredential(token, principal)
    return None


def _cached(
    key: tuple[object, ...], read: Callable[[], RegistryCredential | None], *tags: str
) -> RegistryCredential | None:
    """``read()``, kept in ``_CREDENTIALS`` under ``key`` (``controlplane.hotcache``) while its
    registry is ready, for ``HOT_CACHE_SECONDS`` at most and never past the credential's expiry.
    """
    credential = _CREDENTIALS.get(key)
    if credential is not None:
        return credential
    since = hotcache.fill_started()
    credential = read()
    if credential is None or credential.principal.namespace is None:
        return credential
    token, principal = credential.agent_token, credential.principal
    tags += (
        hotcache.row_tag(ClusterAgentToken, token.pk),
        hotcache.row_tag(Cluster, token.cluster_id),
    )
    if principal.job_credential_id is not None:
        tags += (hotcache.row_tag(JobCredential, principal.job_credential_id),)
    _CREDENTIALS.put(key, credential, since=since, tags=tags, expires_at=principal.expires_at)
    return credential


def job_credential_for_secret(secret: str) -> JobCredential | None:
    """The job credential whose secret this is, usable or not (revoking one needs no more)."""
    if not secret.startswith(JOB_CREDENTIAL_PREFIX):
        return None
    return JobCredential.objects.filter(secret_hash=JobCredential.hash_secret(secret)).first()


def registry_credential_for_secret(secret: str) -> RegistryCredential | None:
    """What a password sent to the token endpoint is: a job credential (``bkrc_...``) or an
    agent token; None for a wrong, expired or revoked one. Warm: no query."""
    if not secret:
        return None
    hashed = secret_hash(secret)
    if secret.startswith(JOB_CREDENTIAL_PREFIX):
        read = partial(_usable_job_credential, secret_hash=hashed)
    else:
        read = partial(_agent_token_credential, token_hash=hashed)
    return _cached(("secret", hashed), read, hotcache.secret_tag(hashed))


def registry_credential_for_refresh(
    agent_token_id: uuid.UUID, job_credential_id: uuid.UUID | None
) -> RegistryCredential | None:
    """What a refresh token names, if it is still valid: a refresh token issued to a job
    credential ends with that credential (and with its agent token). Warm: no query."""
    if job_credential_id is not None:
        read = partial(_usable_job_credential, pk=job_credential_id, agent_token_id=agent_token_id)
    else:
        read = partial(_agent_token_credential, pk=agent_token_id)
    return _cached(("refresh", agent_token_id, job_credential_id), read)


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


def registries_by_state() -> dict[str, int]:
    """How many registries are in each state (every state, 0 included): one grouped query."""
    counts = dict(Registry.objects.values_list("state").annotate(count=Count("pk")).order_by())
    return {state: counts.get(state, 0) for state in State.values}


def registry_overview(*, now: datetime, window: timedelta = timedelta(hours=24)) -> Overview:
    durations = sorted(
        RegistryEvent.objects.filter(
            from_state=State.PROVISIONING, to_state=State.READY, created_at__gte=now - window
        ).values_list("duration", flat=True)
    )
    return Overview(
        by_state=registries_by_state(),
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


@dataclass(frozen=True)
class SigningKeyStatus:
    """A signing key as ``registry_keys status`` and the console list it: no secret."""

    kid: str
    issued_at: datetime
    expires_at: datetime
    #: "current" (signs), "accepted" (its refresh tokens still are), "retired" or "expired".
    role: str
    accepted_until: datetime | None


def signing_key_statuses(now: datetime | None = None) -> list[SigningKeyStatus]:
    """Every signing key, newest first, with its role (``registries.keys.acceptance_windows``
    says the same for the keys a process loads)."""
    now = now or timezone.now()
    lifetime = timedelta(seconds=longest_token_lifetime())
    statuses: list[SigningKeyStatus] = []
    replaced_at: datetime | None = None
    for kid, issued_at, expires_at in TokenSigningKey.objects.order_by(
        "-issued_at", "-id"
    ).values_list("kid", "issued_at", "expires_at"):
        until = expires_at if replaced_at is None else min(replaced_at + lifetime, expires_at)
        if expires_at <= now:
            role = "expired"
        elif not any(status.role == "current" for status in statuses):
            role, until = "current", expires_at
        else:
            role = "accepted" if now < until else "retired"
        statuses.append(SigningKeyStatus(kid, issued_at, expires_at, role, until))
        replaced_at = issued_at
    return statuses


def registries_per_backend(backend_ids: list[int]) -> dict[int, int]:
    """How many registries (not deleted) each of ``backend_ids`` holds: one grouped count."""
    rows = (
        Registry.objects.filter(backend_id__in=backend_ids)
        .exclude(state=State.DELETED)
        .order_by()
        .values_list("backend_id")
        .annotate(count=Count("pk"))
    )
    return {backend_id: count for backend_id, count in rows}


def backends_rehosting() -> list[tuple[int, str, datetime]]:
    """The backends whose public host changed and whose registries may still carry the old one:
    ``(id, public host, when it changed)`` (a blank host is ``REGISTRY_PUBLIC_HOST``)."""
    rows = RegistryBackend.objects.filter(hosts_changed_at__isnull=False).values_list(
        "pk", "public_host", "hosts_changed_at"
    )
    return [
        (pk, (host or settings.REGISTRY_PUBLIC_HOST).rstrip("/"), changed)
        for pk, host, changed in rows
        if changed is not None
    ]


def registries_off_host(backend_id: int, public_host: str) -> RegistryQuerySet:
    """The backend's ready registries whose URL is not on ``public_host``, by id."""
    return (
        Registry.objects.ready()
        .filter(backend_id=backend_id)
        .exclude(url__startswith=f"{public_host}/")
        .order_by("pk")
    )


def registry_host_for_cluster(cluster_id: uuid.UUID) -> str:
    """The host jobs of the cluster push to: its ready registry's URL's (its backend's public
    host), else ``REGISTRY_PUBLIC_HOST``. One query."""
    url = Registry.objects.ready().filter(cluster_id=cluster_id).values_list("url", flat=True)
    found = url.order_by().first()
    return found.split("/", 1)[0] if found else settings.REGISTRY_PUBLIC_HOST
