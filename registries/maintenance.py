"""Garbage collection in a maintenance window, per registry backend, and the verification that
follows it (docs/retention.md#garbage-collection).

A ``GarbageCollection`` is one window on one backend: pushes refused at the token endpoint
(``draining``: uploads in flight finish), the backend's replicas read-only (``read_only``, once
every replica reports it: ``RegistryReplica``), Distribution's ``garbage-collect`` running
(``collecting``), the replicas read-write again (``restoring``), every kept tag checked
(``verifying``), then ``succeeded`` or ``failed``. One at a time per backend.
``VerificationFailure`` is what the check found missing, per registry.

The writes live in ``registries.services.maintenance``, ``.replicas`` and ``.verification``.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class CollectionState(models.TextChoices):
    QUEUED = "queued", "queued"
    DRAINING = "draining", "draining: pushes refused, uploads finishing"
    READ_ONLY = "read_only", "replicas going read-only"
    COLLECTING = "collecting", "collecting garbage"
    RESTORING = "restoring", "replicas going read-write"
    VERIFYING = "verifying", "verifying every kept tag"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


#: A collection in one of these holds its backend's window.
ACTIVE_STATES = (
    CollectionState.QUEUED,
    CollectionState.DRAINING,
    CollectionState.READ_ONLY,
    CollectionState.COLLECTING,
    CollectionState.RESTORING,
    CollectionState.VERIFYING,
)
#: The replicas are asked to be read-only in these.
READ_ONLY_STATES = (CollectionState.READ_ONLY, CollectionState.COLLECTING)


class CollectionTrigger(models.TextChoices):
    SCHEDULE = "schedule", "schedule"
    OPERATOR = "operator", "operator"


class ReplicaMode(models.TextChoices):
    READ_WRITE = "readwrite", "read-write"
    READ_ONLY = "readonly", "read-only"


class GarbageCollection(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    backend = models.ForeignKey(
        "registries.RegistryBackend", on_delete=models.CASCADE, related_name="collections"
    )
    state = models.CharField(
        max_length=16, choices=CollectionState.choices, default=CollectionState.QUEUED
    )
    trigger = models.CharField(max_length=16, choices=CollectionTrigger.choices)
    #: Who asked (the audit actor's display name), or "schedule".
    requested_by = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    #: Written by the worker running the window at least every few seconds: a window whose
    #: heartbeat stopped lost its worker (``collections_end_stale`` ends it).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: ``{"message": str, "done": int, "total": int | None}``: what the current state is doing.
    progress = models.JSONField(default=dict, blank=True)
    #: Whether ``garbage-collect`` ran with ``--delete-untagged``, and why (not).
    delete_untagged = models.BooleanField(default=False)
    delete_untagged_reason = models.CharField(max_length=512, blank=True, default="")
    #: The backend's stored bytes before and after (null where they cannot be measured).
    storage_bytes_before = models.BigIntegerField(null=True, blank=True)
    storage_bytes_after = models.BigIntegerField(null=True, blank=True)
    #: The backend's registries' usage (unique blobs, summed) before and after.
    usage_bytes_before = models.BigIntegerField(null=True, blank=True)
    usage_bytes_after = models.BigIntegerField(null=True, blank=True)
    blobs_deleted = models.PositiveIntegerField(default=0)
    manifests_deleted = models.PositiveIntegerField(default=0)
    uploads_purged = models.PositiveIntegerField(default=0)
    tags_verified = models.PositiveIntegerField(default=0)
    blobs_verified = models.PositiveIntegerField(default=0)
    #: How many manifests and blobs the verification found missing (``failures``).
    missing = models.PositiveIntegerField(default=0)
    #: What went wrong, for an operator (what to do included); empty when it succeeded.
    error = models.TextField(blank=True, default="")
    #: The end of ``garbage-collect``'s output.
    output = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["backend"],
                condition=Q(state__in=[state.value for state in ACTIVE_STATES]),
                name="garbage_collection_one_active",
            ),
        ]
        indexes = [models.Index(fields=["backend", "-created_at"], name="collection_recent")]

    def __str__(self) -> str:
        return f"{self.backend_id} {self.created_at:%Y-%m-%d %H:%M} {self.state}"

    @property
    def freed_bytes(self) -> int | None:
        if self.storage_bytes_before is None or self.storage_bytes_after is None:
            return None
        return self.storage_bytes_before - self.storage_bytes_after


class VerificationFailure(models.Model):
    """A manifest or blob a kept tag needs that the registry did not serve after a collection."""

    collection = models.ForeignKey(
        GarbageCollection, on_delete=models.CASCADE, related_name="failures"
    )
    registry = models.ForeignKey(
        "registries.Registry", on_delete=models.CASCADE, related_name="verification_failures"
    )
    #: The full repository name, with the namespace.
    repository = models.CharField(max_length=255)
    tag = models.CharField(max_length=128)
    #: "manifest" or "blob".
    kind = models.CharField(max_length=16)
    digest = models.CharField(max_length=135)
    #: The index or manifest that references it ("" for the tag's own manifest).
    parent_digest = models.CharField(max_length=135, blank=True, default="")
    detail = models.CharField(max_length=512, blank=True, default="")
    found_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["repository", "tag", "digest"]

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag} {self.kind} {self.digest}"


class RegistryReplica(models.Model):
    """A registry process of a backend, as its runner (``scripts/run-registry``) reports it
    while it asks the control plane which mode to be in."""

    backend = models.ForeignKey(
        "registries.RegistryBackend", on_delete=models.CASCADE, related_name="replicas"
    )
    name = models.CharField(max_length=255)
    mode = models.CharField(
        max_length=16, choices=ReplicaMode.choices, default=ReplicaMode.READ_WRITE
    )
    seen_at = models.DateTimeField(default=timezone.now)
    mode_changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["backend", "name"], name="registry_replica_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.mode})"
