"""Organizations, clusters, queues, cluster agent tokens and the cluster's agent environment.

This app knows nothing about registries: it announces facts through ``clusters.signals`` and
offers ``clusters.services.agent_environment_set`` for other apps to publish variables.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from clusters import instance_shapes, ip_allow_lists
from controlplane.credentials import secret_hash

SLUG_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
QUEUE_KEY_PATTERN = r"^[A-Za-z0-9_-]+$"
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
COLOR_PATTERN = r"^#[0-9A-Fa-f]{6}$"

slug_validator = RegexValidator(
    SLUG_PATTERN, "Use lowercase letters, digits and single hyphens between them."
)
queue_key_validator = RegexValidator(
    QUEUE_KEY_PATTERN, "Use only letters, digits, hyphens (-) and underscores (_)."
)
env_name_validator = RegexValidator(
    ENV_NAME_PATTERN, "Use uppercase letters, digits and underscores, not starting with a digit."
)
color_validator = RegexValidator(COLOR_PATTERN, "Use a hex color such as #FFE0F1.")
BUILDKITE_FLAG = "Buildkite's flag, kept for its clients; nothing here reads it."


class Organization(models.Model):
    """A tenant. Every cluster, and everything under it, belongs to exactly one organization."""

    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    #: The id the REST API shows (Buildkite's organization ids are UUIDs; the key stays internal).
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(slug__regex=SLUG_PATTERN), name="organization_slug_format"
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class Cluster(models.Model):
    """An isolated group of queues and agent tokens inside an organization.

    A cluster gets one container registry, provisioned when its first hosted queue is created.
    ``default_queue`` is where agents that name no queue go; it always belongs to this cluster
    (``clean`` checks it, and ``cluster_update`` calls ``clean``).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="clusters"
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    emoji = models.CharField(max_length=64, blank=True, default="")
    color = models.CharField(max_length=7, blank=True, default="", validators=[color_validator])
    default_queue = models.ForeignKey(
        "Queue", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    hosted_git_mirror_enabled = models.BooleanField(default=False, help_text=BUILDKITE_FLAG)
    hosted_container_cache_enabled = models.BooleanField(default=False, help_text=BUILDKITE_FLAG)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="cluster_name_unique_in_organization"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.name}"

    def clean(self) -> None:
        if self.default_queue is not None and self.default_queue.cluster_id != self.pk:
            raise ValidationError({"default_queue": "The default queue must be in this cluster."})


class QueueQuerySet(models.QuerySet["Queue"]):
    def hosted(self) -> QueueQuerySet:
        return self.exclude(instance_shape="")

    def self_hosted(self) -> QueueQuerySet:
        return self.filter(instance_shape="")


class RetryAgentAffinity(models.TextChoices):
    PREFER_WARMEST = "prefer-warmest", "Prefer the warmest agent"
    PREFER_DIFFERENT = "prefer-different", "Prefer a different agent"


class Queue(models.Model):
    """A named pool of agents in a cluster, which pipelines target with ``agents: {queue: key}``.

    A queue is hosted if and only if it has an instance shape. That is decided at creation and
    never changes: a hosted queue may be resized within its machine type and architecture, a
    self-hosted queue never gets a shape (``queue_update`` enforces this). A paused queue
    dispatches no new jobs; ``dispatch_paused_*`` say who paused it, when and why.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="queues")
    key = models.CharField(max_length=100, validators=[queue_key_validator])
    description = models.TextField(blank=True, default="")
    instance_shape = models.CharField(
        max_length=32,
        blank=True,
        default="",
        choices=instance_shapes.CHOICES,
        help_text="Blank for a self-hosted queue.",
    )
    agent_image_ref = models.CharField(
        max_length=512,
        blank=True,
        default="",
        help_text="A custom agent image for a hosted Linux queue; blank for the default image.",
    )
    retry_agent_affinity = models.CharField(
        max_length=16,
        choices=RetryAgentAffinity.choices,
        default=RetryAgentAffinity.PREFER_WARMEST,
    )
    dispatch_paused = models.BooleanField(default=False)
    dispatch_paused_at = models.DateTimeField(null=True, blank=True)
    dispatch_paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dispatch_paused_note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = QueueQuerySet.as_manager()

    class Meta:
        ordering = ["cluster", "key"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "key"], name="queue_key_unique_in_cluster"),
            models.CheckConstraint(
                condition=Q(key__regex=r"^[A-Za-z0-9_-]{1,100}$"), name="queue_key_format"
            ),
            models.CheckConstraint(
                condition=Q(instance_shape="") | Q(instance_shape__in=list(instance_shapes.SHAPES)),
                name="queue_instance_shape_known",
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def hosted(self) -> bool:
        return bool(self.instance_shape)

    @property
    def shape(self) -> instance_shapes.InstanceShape | None:
        return instance_shapes.SHAPES.get(self.instance_shape)


class ClusterAgentTokenQuerySet(models.QuerySet["ClusterAgentToken"]):
    def active(self) -> ClusterAgentTokenQuerySet:
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )


class ClusterAgentToken(models.Model):
    """A secret that lets agents join a cluster and fetch their job environment.

    Only the SHA-256 of the secret is stored: the secret is shown once, when it is created. A
    token is active until it expires or is revoked; revoked tokens stay as a record.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="agent_tokens")
    description = models.CharField(max_length=255)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(
        max_length=16, editable=False, help_text="The first characters, to recognise a token."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_ip_addresses = models.CharField(
        max_length=512,
        default=ip_allow_lists.ANY_ADDRESS,
        validators=[ip_allow_lists.validate],
        help_text="Space-separated IPv4 CIDR blocks the token may be used from (at most "
        f"{ip_allow_lists.MAX_BLOCKS}); {ip_allow_lists.ANY_ADDRESS} allows every address.",
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = ClusterAgentTokenQuerySet.as_manager()

    class Meta:
        ordering = ["cluster", "-created_at"]
        verbose_name = "cluster agent token"

    def __str__(self) -> str:
        return f"{self.description} ({self.token_prefix}…)"

    hash_secret = staticmethod(secret_hash)

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class AgentEnvironmentVariable(models.Model):
    """A variable that every job on the cluster's hosted agents receives.

    ``source`` names the part of the platform that owns the value (``registry`` publishes
    ``BUILDKITE_HOSTED_REGISTRY_URL``), so each owner replaces or removes only its own variables.
    """

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="environment")
    name = models.CharField(max_length=128, validators=[env_name_validator])
    value = models.TextField()
    source = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["cluster", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "name"], name="agent_environment_name_unique_in_cluster"
            ),
            models.CheckConstraint(
                condition=Q(name__regex=ENV_NAME_PATTERN), name="agent_environment_name_format"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ApiScope(models.TextChoices):
    """What an API access token may do, as Buildkite names its scopes."""

    READ_CLUSTERS = "read_clusters", "Read clusters, queues, agent tokens and job environments"
    WRITE_CLUSTERS = "write_clusters", "Create, change and delete clusters, queues, agent tokens"
    READ_REGISTRIES = "read_registries", "Read cluster registries and their events"
    WRITE_REGISTRIES = "write_registries", "Retry the provisioning of cluster registries"
    READ_ORGANIZATIONS = "read_organizations", "Read the token's own organization"
    READ_AUDIT_EVENTS = "read_audit_events", "Read the organization's audit log"
    #: Operators' scopes: honoured only on a token of a staff user (``OperatorAPIView``).
    READ_REGISTRY_BACKENDS = "read_registry_backends", "Operators: read the registry backends"
    WRITE_REGISTRY_BACKENDS = (
        "write_registry_backends",
        "Operators: add registry backends, change, drain and activate them",
    )
    READ_REGISTRY_KEYS = "read_registry_keys", "Operators: list the registry token signing keys"
    WRITE_REGISTRY_KEYS = "write_registry_keys", "Operators: rotate the registry token signing key"


#: The scopes only a staff user's token is given (the operators' endpoints, ``/v2/operator/``).
OPERATOR_SCOPES = frozenset(
    {
        ApiScope.READ_REGISTRY_BACKENDS,
        ApiScope.WRITE_REGISTRY_BACKENDS,
        ApiScope.READ_REGISTRY_KEYS,
        ApiScope.WRITE_REGISTRY_KEYS,
    }
)


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A REST API access token: owned by a user, bound to one organization, limited to scopes.

    Sent as ``Authorization: Bearer <token>``. Only the SHA-256 of the secret is stored; the
    secret is shown once, when the token is created. A token sees nothing outside its
    organization.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_tokens"
    )
    description = models.CharField(max_length=255)
    scopes = models.JSONField(default=list, help_text="A list of ApiScope values.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["organization", "-created_at"]
        verbose_name = "API access token"

    def __str__(self) -> str:
        return f"{self.description} ({self.token_prefix}…)"

    def clean(self) -> None:
        unknown = [scope for scope in self.scopes if scope not in ApiScope.values]
        if not isinstance(self.scopes, list) or not self.scopes or unknown:
            raise ValidationError({"scopes": f"Give one or more of: {', '.join(ApiScope.values)}."})

    hash_secret = staticmethod(secret_hash)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class WebhookSecretQuerySet(models.QuerySet["WebhookSecret"]):
    def active(self) -> WebhookSecretQuerySet:
        return self.filter(revoked_at__isnull=True)


class WebhookSecret(models.Model):
    """A secret the platform signs its webhook deliveries to one organization with.

    The secret is never stored: it is derived from ``salt`` with the service's own key
    (``clusters.webhooks.secret_for``), so a copy of the database holds none. An organization
    has at most two active secrets, so that a new one can be rolled out before the old one is
    revoked (``webhook_secret_create`` enforces it).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_secrets"
    )
    description = models.CharField(max_length=255)
    salt = models.CharField(max_length=64, unique=True, editable=False)
    secret_prefix = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = WebhookSecretQuerySet.as_manager()

    class Meta:
        ordering = ["organization", "-created_at"]

    def __str__(self) -> str:
        return f"{self.description} ({self.secret_prefix}…)"


class WebhookDelivery(models.Model):
    """One webhook delivery that was applied, written in the transaction that applied it.

    ``delivery_id`` is the sender's id for the delivery (``X-Buildkite-Delivery``), unique per
    organization: a retried or replayed delivery finds this row and gets its ``response``
    again, instead of being applied twice. Deliveries that were refused (bad signature, invalid
    payload) write nothing. Rows are never changed but for ``replayed_at``.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    delivery_id = models.CharField(max_length=128)
    event = models.CharField(max_length=64)
    payload = models.JSONField()
    body_sha256 = models.CharField(max_length=64, help_text="Of the body as it was received.")
    signature = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="The HMAC, for signed deliveries."
    )
    response = models.JSONField(help_text="What the delivery was answered (200).")
    verified_by = models.CharField(max_length=16, help_text="signature or token")
    secret = models.ForeignKey(
        WebhookSecret, null=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    duration = models.DurationField(help_text="How long applying it took.")
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "delivery_id"], name="webhook_delivery_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.delivery_id}"


# The audit log's model lives with its actor context (clusters.audit), imported for Django.
from clusters.audit import AuditEvent  # noqa: E402, F401
