"""The registries app's services, one module per sub-domain; this package is their public
surface (``from registries.services import registry_provision``).

- ``lifecycle``: the one transition helper (it also sets ``Synced``), attempts and backoff,
  enqueueing, creation and retry;
- ``provisioning``: an attempt from ``pending`` to ``ready``;
- ``deprovisioning``: from a deletion to ``deleted``;
- ``health``: the backend check, "verify now", the health canaries (a backend's, a namespace's,
  and the sample each round takes) and the readiness checks;
- ``job_credentials``: the registry credentials jobs get instead of the agent token;
- ``usage``: the inventory (repositories, tags, manifests) and its totals, which the
  notifications, the usage scan and tag deletion write through;
- ``usage_scan``: the periodic scan that rebuilds the inventory from the registry itself;
- ``notifications``: Distribution's events, recorded by the endpoint and applied by a worker;
- ``quotas``: what a registry may hold;
- ``tags``: deleting a tag (its manifest, by digest) from the registry and the inventory;
- ``retention``: retention policies, the plan of what a policy deletes, and its runs;
- ``collection_requests``: asking for a garbage collection, the push refusal, its end's record;
- ``maintenance``: the maintenance window that collects a backend's garbage;
- ``maintenance_schedule``: the collections' schedule and the repair of stale windows;
- ``replicas``: the replicas' modes, as their runners report them;
- ``verification``: checking every kept tag after a collection.

The reconciler's repairs live next to the reconciler (``registries.reconciler.repairs``).
"""

from registries.services.collection_requests import (
    COLLECTION_TASK,
    CollectionActive,
    collection_request,
    refuse_pushes,
)
from registries.services.deprovisioning import (
    access_token_window,
    registry_deprovision,
    registry_deprovision_start,
)
from registries.services.health import (
    BACKEND_CANARY_NAMESPACE,
    BackendCanaryResult,
    CanaryResult,
    backend_canary,
    backend_check,
    canary_backends,
    readiness_registry,
    readiness_signing_key,
    registries_canary_claim,
    registry_canary,
    registry_verify,
)
from registries.services.job_credentials import (
    JOB_CREDENTIAL_USERNAME,
    job_credential_create,
    job_credential_revoke,
)
from registries.services.lifecycle import (
    DEPROVISION_TASK,
    PROVISION_TASK,
    SETTLED,
    AttemptResult,
    attempt_lease,
    backoff_seconds,
    reconcile_interval,
    registry_create_for_cluster,
    registry_retry,
)
from registries.services.maintenance import WindowFailed, collection_run
from registries.services.maintenance_schedule import (
    collections_end_stale,
    collections_repair,
    collections_schedule,
)
from registries.services.notifications import (
    NOTIFICATIONS_TASK,
    Notification,
    Received,
    notifications_apply,
    notifications_apply_unless_busy,
    notifications_prune,
    notifications_receive,
    notifications_sweep,
)
from registries.services.provisioning import registry_provision
from registries.services.quotas import quota_delete, quota_evaluate, quota_set, quota_validate
from registries.services.replicas import (
    REPORTED_MODES,
    ReplicaLimit,
    replica_delete,
    replica_report,
    replicas_blocking,
    replicas_live,
    replicas_prune,
    replicas_wanted_mode,
)
from registries.services.retention import (
    KeptTag,
    PlannedDeletion,
    RetentionPlan,
    RetentionRunning,
    retention_apply,
    retention_plan,
    retention_policy_delete,
    retention_policy_set,
    retention_policy_validate,
    retention_sweep,
)
from registries.services.tags import (
    RegistryNotReady,
    SharedDigest,
    TagDeletion,
    TagDeletionRefused,
    TagNotFound,
    tag_delete,
)
from registries.services.usage import (
    WHOLE_REGISTRY,
    inventory_lock,
    manifest_put,
    manifests_unreferenced_delete,
    pulled,
    repository_get,
    tag_put,
    tags_remove,
    usage_count,
    usage_refresh,
)
from registries.services.usage_scan import (
    UsageScanResult,
    registries_usage_scan_claim,
    registry_usage_scan,
)
from registries.services.verification import (
    VerificationSummary,
    collection_verify,
    registry_verification_latest,
)

__all__ = [
    "COLLECTION_TASK",
    "CollectionActive",
    "collection_request",
    "refuse_pushes",
    "WindowFailed",
    "collection_run",
    "collections_end_stale",
    "collections_repair",
    "collections_schedule",
    "REPORTED_MODES",
    "ReplicaLimit",
    "replica_delete",
    "replica_report",
    "replicas_blocking",
    "replicas_live",
    "replicas_prune",
    "replicas_wanted_mode",
    "VerificationSummary",
    "collection_verify",
    "registry_verification_latest",
    "BACKEND_CANARY_NAMESPACE",
    "DEPROVISION_TASK",
    "JOB_CREDENTIAL_USERNAME",
    "NOTIFICATIONS_TASK",
    "PROVISION_TASK",
    "Received",
    "SETTLED",
    "RegistryNotReady",
    "SharedDigest",
    "TagDeletion",
    "TagDeletionRefused",
    "TagNotFound",
    "UsageScanResult",
    "WHOLE_REGISTRY",
    "AttemptResult",
    "KeptTag",
    "PlannedDeletion",
    "RetentionPlan",
    "RetentionRunning",
    "BackendCanaryResult",
    "CanaryResult",
    "Notification",
    "access_token_window",
    "attempt_lease",
    "backend_canary",
    "backend_check",
    "backoff_seconds",
    "canary_backends",
    "inventory_lock",
    "job_credential_create",
    "job_credential_revoke",
    "manifest_put",
    "manifests_unreferenced_delete",
    "notifications_apply",
    "notifications_apply_unless_busy",
    "notifications_prune",
    "notifications_receive",
    "notifications_sweep",
    "pulled",
    "quota_delete",
    "quota_evaluate",
    "quota_set",
    "quota_validate",
    "readiness_registry",
    "readiness_signing_key",
    "reconcile_interval",
    "registries_canary_claim",
    "registries_usage_scan_claim",
    "registry_canary",
    "registry_create_for_cluster",
    "registry_deprovision",
    "registry_deprovision_start",
    "registry_provision",
    "registry_retry",
    "registry_usage_scan",
    "registry_verify",
    "repository_get",
    "retention_apply",
    "retention_plan",
    "retention_policy_delete",
    "retention_policy_set",
    "retention_policy_validate",
    "retention_sweep",
    "tag_delete",
    "tag_put",
    "tags_remove",
    "usage_count",
    "usage_refresh",
]
