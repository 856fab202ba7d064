"""The cluster's registry as the REST API shows it: its state, a Kubernetes-style ``Ready``
condition that summarises it, and the history of its transitions (oldest first).

Timestamps and ``null`` for empty values follow the rest of the API (``clusters.api.serializers``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clusters.api.serializers import TimestampField, empty_to_none
from registries.models import Registry, RegistryEvent, State

#: The ``reason`` of the Ready condition, for each state (a failed deprovisioning has its own).
REASONS: dict[str, str] = {
    State.PENDING: "Pending",
    State.PROVISIONING: "Provisioning",
    State.READY: "Provisioned",
    State.FAILED: "ProvisioningFailed",
    State.DEPROVISIONING: "Deprovisioning",
    State.DELETED: "Deprovisioned",
}
DEPROVISIONING_FAILED = "DeprovisioningFailed"
STATE_HELP = f"A registry state: {', '.join(State.values)}."

#: The ``message`` of the Ready condition when the registry has no error to report.
SENTENCES: dict[str, str] = {
    State.PENDING: "Provisioning is queued: a worker will create the registry shortly.",
    State.PROVISIONING: "A worker is creating the registry.",
    State.READY: "The registry is ready; the cluster's hosted jobs receive its URL.",
    State.FAILED: "Provisioning failed; retry it once the cause is fixed.",
    State.DEPROVISIONING: "The registry is being deleted: it grants nothing any more.",
    State.DELETED: "The registry was deleted.",
}


def ready_condition(registry: Registry) -> dict[str, Any]:
    failed_deprovisioning = (
        registry.state == State.FAILED and registry.deprovision_requested_at is not None
    )
    return {
        "type": "Ready",
        "status": "True" if registry.state == State.READY else "False",
        "reason": DEPROVISIONING_FAILED if failed_deprovisioning else REASONS[registry.state],
        "message": registry.last_error or SENTENCES[registry.state],
        "last_transition_time": registry.state_changed_at,
    }


class RegistryConditionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Whether the registry is ready, and why not, as a Kubernetes condition is written."""

    type = serializers.CharField(read_only=True, help_text='Always "Ready".')
    status = serializers.ChoiceField(choices=["True", "False"], read_only=True)
    reason = serializers.CharField(
        read_only=True,
        help_text="Why, in CamelCase: Pending, Provisioning, Provisioned, ProvisioningFailed, "
        "Deprovisioning, DeprovisioningFailed or Deprovisioned.",
    )
    message = serializers.CharField(read_only=True)
    last_transition_time = TimestampField()


class RegistryEventSerializer(serializers.Serializer):  # type: ignore[type-arg]
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


class RegistrySerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A cluster's container registry, its Ready condition and its transitions, oldest first."""

    # ``events`` are read from the prefetch of ``registries.api.registry_queryset``.

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
    conditions = serializers.SerializerMethodField()
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
        condition = RegistryConditionSerializer(ready_condition(registry))
        return [condition.data]
