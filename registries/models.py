"""A cluster's container registry, its state machine, and the history of its transitions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from clusters.interface import Cluster, ClusterAgentToken
from controlplane import credentials

#: The variable that publishes a ready registry's URL to its cluster's hosted jobs.
REGISTRY_URL_VARIABLE = "BUILDKITE_HOSTED_REGISTRY_URL"


class State(models.TextChoices):
    PENDING = "pending", "Pending"
    PROVISIONING = "provisioning", "Provisioning"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    DEPROVISIONING = "deprovisioning", "Deprovisioning"
    DELETED = "deleted", "Deleted"


#: Which state may follow which. ``provisioning -> pending`` and ``deprovisioning ->
#: deprovisioning`` are failed attempts that will be retried; ``provisioning -> provisioning`` is a
#: worker resuming an interrupted attempt.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.PENDING: frozenset({State.PROVISIONING, State.DEPROVISIONING}),
    State.PROVISIONING: frozenset(
        {State.PROVISIONING, State.READY, State.PENDING, State.FAILED, State.DEPROVISIONING}
    ),
    State.READY: frozenset({State.DEPROVISIONING}),
    State.FAILED: frozenset({State.PENDING, State.DEPROVISIONING}),
    State.DEPROVISIONING: frozenset({State.DEPROVISIONING, State.DELETED, State.FAILED}),
    State.DELETED: frozenset(),
}


#: The states in which a registry is owed an attempt (provisioning or deprovisioning), which the
#: reconciler moves on once their ``next_attempt_at`` has passed.
OWED_STATES = (State.PENDING, State.PROVISIONING, State.DEPROVISIONING)


class BackendState(models.TextChoices):
    ACTIVE = "active", "Active"
    DRAINING = "draining", "Draining"


class StorageKind(models.TextChoices):
    FILESYSTEM = "filesystem", "Local filesystem"
    S3 = "s3", "S3 or S3-compatible"
    GCS = "gcs", "Google Cloud Storage"
    AZURE = "azure", "Azure Blob Storage"
    OTHER = "other", "Other"


#: The backend that follows the settings (``REGISTRY_URL``, ``REGISTRY_PUBLIC_HOST``,
#: ``REGISTRY_TOKEN_SERVICE``) for each of its blank fields: created by migration 0008 and, on an
#: empty table, by the first placement.
DEFAULT_BACKEND = "default"


class RegistryBackend(models.Model):
    """A registry deployment (one Distribution configuration, any number of replicas on shared
    storage) that hosts cluster namespaces.

    ``api_url`` is what the workers and canaries call; ``public_host`` prefixes every
    ``BUILDKITE_HOSTED_REGISTRY_URL`` of its registries; ``token_service`` is the ``service`` its
    registries send to the token endpoint and the audience of the tokens they accept. The
    ``default`` backend may leave them blank: each then follows its setting. New registries are
    placed only on ``active`` backends (``registries.backends``); a ``draining`` one keeps serving
    the registries it has. ``hosts_changed_at`` is set when ``public_host`` changes, until the
    reconciler has republished every URL of the backend's registries and no stale copy or
    attempt in flight can still use the old host.
    """

    name = models.SlugField(max_length=63, unique=True)
    api_url = models.CharField(max_length=512, blank=True, default="")
    public_host = models.CharField(max_length=255, blank=True, default="")
    token_service = models.CharField(max_length=255, blank=True, default="")
    storage = models.CharField(
        max_length=16, choices=StorageKind.choices, default=StorageKind.FILESYSTEM
    )
    labels = models.JSONField(default=dict, blank=True)
    weight = models.PositiveIntegerField(default=100)
    capacity = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many registries; empty for no limit."
    )
    state = models.CharField(
        max_length=16, choices=BackendState.choices, default=BackendState.ACTIVE
    )
    hosts_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    #: Set while a garbage collection holds the backend's window (``services.maintenance``):
    #: the token endpoint grants no push until then, and says to retry after it.
    pushes_refused_until = models.DateTimeField(null=True, blank=True, editable=False)
    #: The registry configuration ``garbage-collect`` runs on, as the maintenance workers see it
    #: (its storage section is the replicas'); blank: ``REGISTRY_GC_CONFIG`` (default backend).
    gc_config = models.CharField(max_length=512, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["token_service"],
                condition=~Q(token_service=""),
                name="registry_backend_service_unique",
            ),
            models.CheckConstraint(
                condition=Q(name=DEFAULT_BACKEND)
                | (~Q(api_url="") & ~Q(public_host="") & ~Q(token_service="")),
                name="registry_backend_addresses_set",
            ),
            models.CheckConstraint(
                condition=Q(state__in=BackendState.values), name="registry_backend_state_known"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RegistryQuerySet(models.QuerySet["Registry"]):
    def ready(self) -> RegistryQuerySet:
        return self.filter(state=State.READY)


class Registry(models.Model):
    """The container registry of one cluster: a namespace on an OCI registry.

    Created in state ``pending`` in the transaction that creates the cluster's first hosted
    queue; that row is the durable record that provisioning is owed, whether or not the task
    reached the broker. A ``ready`` registry has a URL (``<public host>/<namespace>``), which is
    published to the cluster's hosted jobs as ``BUILDKITE_HOSTED_REGISTRY_URL``. Namespaces are
    unique and never reused. Every change of ``state`` writes a ``RegistryEvent`` with it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    #: None once the cluster is deleted: the registry row stays, as the record that its
    #: namespace was used and is never given out again. PROTECT: a cluster is deleted only
    #: through ``cluster_delete``, which detaches its registry and starts deprovisioning.
    cluster = models.OneToOneField(
        Cluster, null=True, blank=True, on_delete=models.PROTECT, related_name="registry"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    namespace = models.CharField(max_length=255, unique=True)
    url = models.CharField(max_length=512, blank=True, default="")
    driver = models.CharField(max_length=32)
    #: Where the namespace lives: chosen by the first provisioning attempt (``registries.backends``)
    #: and kept for the registry's life. None only before that attempt.
    backend = models.ForeignKey(
        RegistryBackend,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="registries",
    )
    attempts = models.PositiveIntegerField(
        default=0, help_text="Provisioning attempts since the last manual retry."
    )
    last_error = models.TextField(blank=True, default="")
    state_changed_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    #: When deprovisioning was asked for; never cleared. From then on the registry is owed
    #: deprovisioning, not provisioning, and grants nothing.
    deprovision_requested_at = models.DateTimeField(null=True, blank=True)
    #: When the reconciler should move a ``pending``, ``provisioning`` or ``deprovisioning``
    #: registry on, unless something has by then: the lease of a running attempt (its time limit
    #: plus one reconcile interval), the time of a scheduled retry, or a swept registry's final
    #: sweep. None in the other states.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: When the running attempt's lease ends; None when no attempt runs. Also the attempt's
    #: fencing token: an attempt records its outcome only if the row still carries its deadline,
    #: so an attempt that outlived its lease cannot overwrite the one that replaced it.
    attempt_deadline = models.DateTimeField(null=True, blank=True)
    #: Kubernetes-style conditions, ``Ready`` and ``Synced`` (see ``registries.conditions``).
    conditions = models.JSONField(default=list, blank=True)
    #: A ``failed`` registry whose last error was transient (the registry did not answer): the
    #: reconciler retries it by itself once the registry answers again.
    failure_transient = models.BooleanField(default=False)
    #: The last health canary (a blob pushed, read back and deleted): when, whether it passed,
    #: how long it took and what it saw.
    canary_at = models.DateTimeField(null=True, blank=True)
    canary_ok = models.BooleanField(null=True, blank=True)
    canary_latency = models.DurationField(null=True, blank=True)
    canary_message = models.TextField(blank=True, default="")
    #: Whether the ``canary_*`` fields above hold its backend's canary (one per backend and
    #: round, recorded on every ready registry of the backend when its outcome changes) rather
    #: than a canary of this registry's own namespace. A passing backend canary restores only
    #: the failures it recorded itself.
    canary_by_backend = models.BooleanField(default=False)
    #: When this registry's namespace is next due for a canary of its own: each round checks at
    #: most ``REGISTRY_CANARY_SAMPLE`` due ready registries, oldest due first, and moves each one
    #: ``REGISTRY_CANARY_PERIOD_SECONDS`` on (``services.health.registries_canary_claim``). A new
    #: registry is due at once.
    canary_due_at = models.DateTimeField(default=timezone.now)
    #: The last "verify now" from the console: when, whether the registry still demanded and
    #: accepted our tokens, and what was seen.
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_ok = models.BooleanField(null=True, blank=True)
    verification = models.TextField(blank=True, default="")
    #: Usage (``registries.inventory``, ``services.usage``): unique blob bytes, repositories and
    #: tags, the last push and pull, and when the usage scan last rebuilt them.
    usage_bytes = models.BigIntegerField(default=0)
    usage_repositories = models.PositiveIntegerField(default=0)
    usage_tags = models.PositiveIntegerField(default=0)
    last_push_at = models.DateTimeField(null=True, blank=True)
    last_pull_at = models.DateTimeField(null=True, blank=True)
    usage_scanned_at = models.DateTimeField(null=True, blank=True)
    #: When the usage scan is next due: each round claims the ready registries longest due and
    #: moves each ``REGISTRY_USAGE_SCAN_SECONDS`` on (``services.usage_scan``), whether or not
    #: its scan then succeeds, so failing registries never crowd out the others. A new one is due
    #: at once.
    usage_scan_due_at = models.DateTimeField(default=timezone.now)
    #: Why the token endpoint grants no push in the namespace ("" while it does): the quota's
    #: hard limit is reached (``services.quotas.quota_evaluate`` keeps it, with the
    #: ``QuotaExceeded`` condition). Read by the token endpoint's one query.
    push_refused = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = RegistryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "registries"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=State.values), name="registry_state_known"
            ),
            models.CheckConstraint(
                condition=~Q(state=State.READY) | ~Q(url=""), name="registry_ready_has_url"
            ),
            models.CheckConstraint(
                condition=Q(deprovision_requested_at__isnull=False)
                | (Q(cluster__isnull=False) & ~Q(state__in=[State.DEPROVISIONING, State.DELETED])),
                name="registry_deprovisioning_requested",
            ),
        ]
        # Partial indexes: each holds only the rows one periodic select is after, so the
        # reconciler and the canary rounds read the rows that are due, not the whole table
        # (docs/reliability.md, "What a pass reads").
        indexes = [
            # selectors.registries_due: the registries owed an attempt, by due time (and the
            # rows written before there were due times, by age).
            models.Index(
                fields=["next_attempt_at", "state_changed_at"],
                name="registry_attempt_due",
                condition=Q(state__in=OWED_STATES),
            ),
            # selectors.registries_failed_transiently.
            models.Index(
                fields=["state_changed_at"],
                name="registry_failed_transient",
                condition=Q(state=State.FAILED, failure_transient=True),
            ),
            # selectors.registries_canary_due: the next ready namespaces to canary.
            models.Index(
                fields=["canary_due_at", "id"],
                name="registry_canary_due",
                condition=Q(state=State.READY),
            ),
            # usage_selectors.registries_usage_scan_due: the next ready registries to scan.
            models.Index(
                fields=["usage_scan_due_at", "id"],
                name="registry_usage_scan_due",
                condition=Q(state=State.READY),
            ),
            # The ready registries whose canary failed, by backend, in key order (the order a
            # backend canary that passes again restores them in, a batch at a time).
            models.Index(
                fields=["backend", "id"],
                name="registry_canary_failed_backend",
                condition=Q(state=State.READY, canary_ok=False),
            ),
        ]

    def __str__(self) -> str:
        return self.namespace

    def can_become(self, state: str) -> bool:
        return state in TRANSITIONS[self.state]


class RegistryEvent(models.Model):
    """One transition of a registry, written in the same transaction as the transition.

    ``duration`` is how long the registry spent in ``from_state``: for ``provisioning -> ready``
    it is how long the provisioning step took. Rows are never changed or deleted.
    """

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=16, choices=State.choices, blank=True)
    to_state = models.CharField(max_length=16, choices=State.choices)
    attempt = models.PositiveIntegerField(default=0)
    duration = models.DurationField(default=timedelta)
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["registry", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.from_state or 'new'} -> {self.to_state}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("Registry events are append-only.")
        super().save(*args, **kwargs)


class Lease(models.Model):
    """A named lease that at most one process holds until ``expires_at`` (the reconciler's lock
    against a second Celery beat). Taken with one conditional UPDATE; see
    ``registries.reconciler.lease.lease_acquire``."""

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=255, blank=True, default="")
    expires_at = models.DateTimeField(default=timezone.now)
    #: What the holder carries over to the next holder, written when it lets go (only while it
    #: still holds the lease): the reconciler's sweeps keep where they stopped here.
    progress = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name


#: The start of every job credential's secret, so that secret scanners recognise one (and the
#: token endpoint tells it from an agent token without a second lookup).
JOB_CREDENTIAL_PREFIX = "bkrc_"  # noqa: S105 - a marker, not a secret


class JobCredentialQuerySet(models.QuerySet["JobCredential"]):
    def usable(self) -> JobCredentialQuerySet:
        """Credentials that work now: not revoked, not expired, and their agent token neither
        revoked nor expired (revoking the agent token ends every credential issued for it)."""
        now = timezone.now()
        return self.filter(
            revoked_at__isnull=True,
            expires_at__gt=now,
            agent_token__revoked_at__isnull=True,
        ).filter(Q(agent_token__expires_at__isnull=True) | Q(agent_token__expires_at__gt=now))


class JobCredential(models.Model):
    """A registry credential for one job, which the agent's ``environment`` hook exchanges the
    cluster agent token for, so that the job never holds the agent token.

    It grants what its agent token grants in the registry (pull, push and delete in the cluster's
    namespace), only until ``expires_at`` (``REGISTRY_JOB_CREDENTIAL_TTL_SECONDS``), until it is
    revoked (the ``pre-exit`` hook does) and while its agent token is active. Only the SHA-256 of
    the secret is stored; deleting the agent token (or its cluster) deletes its credentials.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent_token = models.ForeignKey(
        ClusterAgentToken, on_delete=models.CASCADE, related_name="job_credentials"
    )
    #: ``BUILDKITE_JOB_ID`` when the agent gave one: which job the credential was for.
    job_id = models.CharField(max_length=64, blank=True, default="")
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_prefix = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = JobCredentialQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["expires_at"], name="job_credential_expires_at")]

    def __str__(self) -> str:
        return f"{self.job_id or 'job'} ({self.secret_prefix}…)"

    hash_secret = staticmethod(credentials.secret_hash)


class TokenSigningAuthority(models.Model):
    """The CA whose certificates registries trust (their ``rootcertbundle``): one row, ever.
    Its certificate only; its private key stays the file ``ca.key`` where signing keys are
    issued (``registries.key_files``)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    certificate = models.TextField(help_text="PEM; public.")
    fingerprint = models.CharField(max_length=95, help_text="SHA-256 of the certificate.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="token_signing_authority_one_row")
        ]

    def __str__(self) -> str:
        return f"registry token CA {self.fingerprint}"


class TokenSigningKey(models.Model):
    """A key that signs registry tokens, issued by the ``TokenSigningAuthority``. The newest
    (``issued_at``) signs; older ones are accepted for a while (``registries.keys``). The private
    key is encrypted with the key-encryption key (``registries.key_encryption``)."""

    kid = models.CharField(max_length=64, unique=True)
    certificate = models.TextField(help_text="PEM; public.")
    encrypted_private_key = models.TextField(help_text="Fernet token of the PKCS#8 PEM.")
    issued_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-issued_at", "-id"]

    def __str__(self) -> str:
        return self.kid


# What each registry holds (registries.inventory), imported for Django.
from registries.inventory import (  # noqa: E402, F401
    Manifest,
    RegistryNotification,
    Repository,
    Tag,
    UsageDay,
)
from registries.maintenance import (  # noqa: E402, F401
    GarbageCollection,
    RegistryReplica,
    VerificationFailure,
)
from registries.quotas import RegistryQuota  # noqa: E402, F401
from registries.retention import RetentionPolicy, RetentionRun  # noqa: E402, F401
