"""What each registry holds and how it is used: repositories, tags, the manifests they point to,
usage per day, and the registry's notifications as they arrived.

Figures are kept from two sources (docs/usage.md): Distribution's notifications, which arrive
within a second but can be lost (a replica queues them in memory), and the periodic usage scan,
which rebuilds the inventory from the registry itself and repairs what the events missed.
Storage is counted in unique blobs: a blob shared by two tags, or two repositories of one
namespace, counts once (``registries.services.usage``).

The models refer to ``Registry`` by name, so that ``registries.models`` imports this module and
not the other way round.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

#: The media types of a manifest that lists other manifests: an OCI image index, a Docker
#: manifest list (a multi-platform image).
INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


class Repository(models.Model):
    """A repository of a registry's namespace, e.g. ``acme/0123456789ab/base``."""

    registry = models.ForeignKey(
        "registries.Registry", on_delete=models.CASCADE, related_name="repositories"
    )
    #: The full name, with the namespace.
    name = models.CharField(max_length=255)
    #: Unique blobs (layers, configs, manifests) referenced by its tags.
    bytes = models.BigIntegerField(default=0)
    tag_count = models.PositiveIntegerField(default=0)
    last_push_at = models.DateTimeField(null=True, blank=True)
    last_pull_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "repositories"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["registry", "name"], name="repository_unique_name")
        ]
        indexes = [models.Index(fields=["registry", "-bytes"], name="repository_largest")]

    def __str__(self) -> str:
        return self.name


class Manifest(models.Model):
    """A manifest (or index) in a registry, by digest, with every blob it references: for an image
    manifest its config and layers, for an index its member manifests and theirs."""

    registry = models.ForeignKey(
        "registries.Registry", on_delete=models.CASCADE, related_name="manifests"
    )
    digest = models.CharField(max_length=135)
    media_type = models.CharField(max_length=255, blank=True, default="")
    #: The manifest's own size.
    size = models.BigIntegerField(default=0)
    #: ``{digest: size}`` of every blob it references, members' blobs included.
    blobs = models.JSONField(default=dict, blank=True)
    #: Whether ``blobs`` is complete: False when only part of it is known (an index whose members
    #: an event did not describe); the next usage scan completes it.
    complete = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["registry", "digest"], name="manifest_unique_digest")
        ]

    def __str__(self) -> str:
        return self.digest

    @property
    def bytes(self) -> int:
        """The manifest and its unique blobs."""
        return self.size + sum(int(size) for size in self.blobs.values())


class Tag(models.Model):
    """A tag of a repository and the manifest digest it points to."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    digest = models.CharField(max_length=135)
    #: The manifest's size with its unique blobs (``Manifest.bytes``).
    bytes = models.BigIntegerField(default=0)
    #: When the registry says it was pushed (the event's time, the registry's clock).
    pushed_at = models.DateTimeField(default=timezone.now)
    last_pulled_at = models.DateTimeField(null=True, blank=True)
    #: When the inventory last wrote it (``tag_put``), by the control plane's clock: what the
    #: usage scan compares with its own start (``pushed_at`` is another machine's clock).
    updated_at = models.DateTimeField(default=timezone.now)
    #: The registry's time of the last event applied to it; None when the usage scan wrote it
    #: last. Events compare with it only (one clock): an older event arriving late changes
    #: nothing, and a scan's stamp (the control plane's clock) never makes an event look old.
    event_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pushed_at", "name"]
        constraints = [
            models.UniqueConstraint(fields=["repository", "name"], name="tag_unique_name")
        ]
        indexes = [models.Index(fields=["repository", "digest"], name="tag_digest")]

    def __str__(self) -> str:
        return self.name


class UsageDay(models.Model):
    """One day of a registry's use (``repository`` blank) or one repository's: pushes and pulls
    counted from the events, and storage as last figured that day (the chart of storage over
    time)."""

    registry = models.ForeignKey(
        "registries.Registry", on_delete=models.CASCADE, related_name="usage_days"
    )
    repository = models.CharField(max_length=255, blank=True, default="")
    day = models.DateField()
    pushes = models.PositiveIntegerField(default=0)
    pulls = models.PositiveIntegerField(default=0)
    #: Storage at the last figure of the day; None for a repository's day before one was taken.
    bytes = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["day"]
        constraints = [
            models.UniqueConstraint(
                fields=["registry", "repository", "day"], name="usage_day_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.repository or self.registry_id} {self.day}"


class RegistryNotification(models.Model):
    """A Distribution notification as it was received: the record that makes the endpoint
    idempotent by event id, and the queue the worker applies (``applied_at``). Pruned after
    ``REGISTRY_NOTIFICATIONS_KEEP_DAYS``."""

    #: Distribution's event id.
    id = models.CharField(max_length=64, primary_key=True)
    registry = models.ForeignKey(
        "registries.Registry",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    action = models.CharField(max_length=16)
    repository = models.CharField(max_length=255)
    occurred_at = models.DateTimeField()
    #: The event's ``target`` (digest, tag, media type, size, references).
    target = models.JSONField(default=dict)
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["received_at"],
                name="notification_unapplied",
                condition=Q(applied_at__isnull=True),
            ),
            models.Index(fields=["received_at"], name="notification_received"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.repository}"
