"""The cluster's registry as the REST API shows it: its state, its Kubernetes-style ``Ready``
and ``Synced`` conditions, its last health canary, and the history of its transitions (oldest
first).

Timestamps and ``null`` for empty values follow the rest of the API (``controlplane.api.fields``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.api.fields import TimestampField, empty_to_none
from controlplane.api.serializers import ReadSerializer
from registries import conditions as registry_conditions
from registries import quotas as quota_limits
from registries.models import Registry, RegistryEvent, State
from registries.services.quotas import LIMIT_MAX

STATE_HELP = f"A registry state: {', '.join(State.values)}."


class RegistryConditionSerializer(ReadSerializer):
    """One condition, as Kubernetes writes them (see ``registries.conditions``)."""

    type = serializers.ChoiceField(
        choices=list(registry_conditions.TYPES),
        read_only=True,
        help_text="Ready: can the cluster's jobs use the registry now (provisioned, and its "
        "health canary passes)? Synced: did the control plane's last attempt to make the world "
        "match the record succeed? QuotaExceeded: does the registry hold its quota's soft limit "
        "or more (HardLimitExceeded: no push is granted)?",
    )
    status = serializers.ChoiceField(
        choices=[registry_conditions.TRUE, registry_conditions.FALSE, registry_conditions.UNKNOWN],
        read_only=True,
    )
    reason = serializers.CharField(
        read_only=True,
        help_text="Why, in CamelCase. Ready: Pending, Provisioning, Provisioned, CanaryFailed, "
        "CanaryPassed, UrlNotPublished, ProvisioningFailed, Deprovisioning, DeprovisioningFailed, "
        "Deprovisioned. "
        "Synced: Created, ReconcileSuccess, ReconcileError, EnqueueFailed, Stalled, "
        "RetryRequested, DeprovisionRequested. "
        "QuotaExceeded: WithinQuota, SoftLimitExceeded, HardLimitExceeded.",
    )
    message = serializers.CharField(read_only=True)
    last_transition_time = TimestampField(help_text="When status last changed.")


class RegistryCanarySerializer(ReadSerializer):
    """The last health canary: a blob pushed, read back and deleted in the namespace."""

    at = TimestampField(source="canary_at")
    passed = serializers.BooleanField(source="canary_ok", read_only=True)
    latency_ms = serializers.SerializerMethodField()
    message = serializers.CharField(source="canary_message", read_only=True)

    def get_latency_ms(self, registry: Registry) -> float | None:
        latency = registry.canary_latency
        return None if latency is None else round(latency.total_seconds() * 1000, 1)


class RegistryEventSerializer(ReadSerializer):
    """One transition of the registry."""

    # Plain strings, not a second and third name for the state enum (``RegistrySerializer.state``).
    from_state = serializers.SerializerMethodField(help_text=f"{STATE_HELP} Null at creation.")
    to_state = serializers.CharField(read_only=True, help_text=STATE_HELP)
    attempt = serializers.IntegerField(read_only=True)
    duration_seconds = serializers.SerializerMethodField(
        help_text="How long the registry was in from_state."
    )
    message = serializers.CharField(read_only=True)
    created_at = TimestampField()

    def get_from_state(self, event: RegistryEvent) -> str | None:
        return empty_to_none(event.from_state)  # blank for the registry's creation

    def get_duration_seconds(self, event: RegistryEvent) -> float:
        return event.duration.total_seconds()


class RegistrySerializer(ReadSerializer):
    """A cluster's container registry, its Ready condition and its transitions, oldest first."""

    # ``events`` are read from the prefetch of ``registries.selectors.registry_queryset``.

    id = serializers.UUIDField(read_only=True)
    state = serializers.ChoiceField(choices=State.choices, read_only=True)
    url = serializers.SerializerMethodField(
        help_text="The image reference prefix (host/namespace, no scheme); null until ready."
    )
    namespace = serializers.CharField(read_only=True)
    driver = serializers.CharField(read_only=True)
    attempts = serializers.IntegerField(
        read_only=True, help_text="Provisioning attempts since the last retry."
    )
    last_error = serializers.SerializerMethodField()
    conditions = serializers.SerializerMethodField(
        help_text="Ready, Synced, (once a quota applied) QuotaExceeded and (after its backend's "
        "first garbage collection) Verified, as Kubernetes conditions."
    )
    canary = serializers.SerializerMethodField(help_text="The last health canary; null before one.")
    created_at = TimestampField()
    ready_at = TimestampField(allow_null=True)
    state_changed_at = TimestampField()
    events = RegistryEventSerializer(many=True, read_only=True)

    def get_url(self, registry: Registry) -> str | None:
        return empty_to_none(registry.url)

    def get_last_error(self, registry: Registry) -> str | None:
        return empty_to_none(registry.last_error)

    @extend_schema_field(RegistryConditionSerializer(many=True))
    def get_conditions(self, registry: Registry) -> list[dict[str, Any]]:
        stored = [
            registry_conditions.condition_get(registry, type_)
            for type_ in registry_conditions.TYPES
        ]
        return RegistryConditionSerializer([c for c in stored if c], many=True).data  # type: ignore[return-value]

    @extend_schema_field(RegistryCanarySerializer(allow_null=True))
    def get_canary(self, registry: Registry) -> dict[str, Any] | None:
        return None if registry.canary_at is None else RegistryCanarySerializer(registry).data


LIMIT_HELP = "Bytes of unique blobs (layers, configs, manifests); null for no limit."


class QuotaInputSerializer(serializers.Serializer[Any]):
    """A quota's limits: PUT replaces all three (a missing one is no limit), PATCH the ones sent."""

    hard_bytes = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=LIMIT_MAX,
        help_text=f"At or over it, no push is granted. {LIMIT_HELP}",
    )  # fmt: skip
    soft_bytes = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=LIMIT_MAX,
        help_text="At or over it, the registry's QuotaExceeded condition turns True; null: "
        f"{quota_limits.SOFT_DEFAULT_PERCENT}% of hard_bytes. At most hard_bytes.",
    )  # fmt: skip
    hard_tags = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=LIMIT_MAX,
        help_text="At or over this many tags, no push is granted; null for no limit.",
    )  # fmt: skip

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: "Unknown field; the limits are hard_bytes, soft_bytes and hard_tags."
                 for name in unknown}
            )  # fmt: skip
        return attrs


class QuotaLimitsSerializer(ReadSerializer):
    """The limits in force and where they come from."""

    set_by = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="cluster (its override), organization (its default), setting "
        "(REGISTRY_QUOTA_DEFAULT_BYTES), or null: no quota.",
    )  # fmt: skip
    hard_bytes = serializers.IntegerField(read_only=True, allow_null=True, help_text=LIMIT_HELP)
    soft_bytes = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The soft limit in force."
    )
    soft_bytes_set = serializers.IntegerField(
        read_only=True, allow_null=True,
        help_text=f"The soft limit as set; null: {quota_limits.SOFT_DEFAULT_PERCENT}% of "
        "hard_bytes.",
    )  # fmt: skip
    hard_tags = serializers.IntegerField(read_only=True, allow_null=True)


class RegistryQuotaSerializer(QuotaLimitsSerializer):
    """A cluster's registry's usage against the quota that applies to it."""

    used_bytes = serializers.IntegerField(read_only=True)
    used_tags = serializers.IntegerField(read_only=True)
    percent = serializers.FloatField(
        read_only=True, allow_null=True, help_text="used_bytes as a percentage of hard_bytes."
    )
    state = serializers.ChoiceField(choices=list(quota_limits.STATES), read_only=True)
    message = serializers.CharField(read_only=True)
    push_refused = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="What a client asking to push is told; null while pushes are granted.",
    )  # fmt: skip


class OrganizationQuotaSerializer(QuotaLimitsSerializer):
    """The organization's default quota, and its clusters' registries it applies to by state."""

    registries = serializers.DictField(
        child=serializers.IntegerField(), read_only=True,
        help_text="How many registries the default applies to are in each state: unlimited, "
        "within, soft_exceeded, hard_exceeded.",
    )  # fmt: skip
