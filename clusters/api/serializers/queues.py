"""Queues in Buildkite's shapes (its REST API's cluster queues; see docs/api.md).

Responses use snake_case (``hosted_agents.instance_shape``); requests use Buildkite's camelCase
(``hostedAgents: {instanceShape, agentImageRef}``), and the snake_case spelling is accepted too.
A self-hosted queue shows ``retry_agent_affinity`` and no ``hosted_agents``; a hosted queue shows
``hosted_agents`` and no ``retry_agent_affinity``, as Buildkite's examples do. Writes go through
``clusters.services``, which also checks instance shapes and agent images.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import Direction, extend_schema_field
from rest_framework import serializers

from clusters import instance_shapes
from clusters.api.serializers.common import Route, UserSerializer, blank_nulls, graphql_id
from clusters.models import QUEUE_KEY_PATTERN, Queue, RetryAgentAffinity
from controlplane.api.fields import TimestampField, empty_to_none
from controlplane.api.serializers import ReadSerializer, from_columns, plain

AGENT_IMAGE_REF_MAX_LENGTH = Queue._meta.get_field("agent_image_ref").max_length
#: Buildkite's answer to ``agentImageRef`` sent without ``instanceShape`` beside it, word for word
#: (the shape it names is the one that was not sent: none).
AGENT_IMAGE_REF_WITHOUT_SHAPE = "Instance shape cannot be changed to "

HOSTED_AGENTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Only on hosted queues.",
    "properties": {
        "instance_shape": {
            "type": "object",
            "properties": {
                "machine_type": {"type": "string", "enum": ["linux", "macos"]},
                "architecture": {"type": "string", "enum": ["amd64", "arm64"]},
                "cpu": {"type": "integer"},
                "memory": {"type": "integer", "description": "GB"},
                "name": {"type": "string", "enum": list(instance_shapes.SHAPES)},
            },
            "required": ["machine_type", "architecture", "cpu", "memory", "name"],
        },
        "platform_settings": {
            "type": "object",
            "description": "`linux` on Linux queues; empty on macOS queues.",
            "properties": {
                "linux": {
                    "type": "object",
                    "properties": {
                        "agent_image_ref": {
                            "type": "string",
                            "nullable": True,
                            "description": "A custom agent image; null for the default one.",
                        },
                    },
                    "required": ["agent_image_ref"],
                },
            },
        },
    },
    "required": ["instance_shape", "platform_settings"],
}


def shown_hosted_agents(instance_shape: str, agent_image_ref: str) -> dict[str, Any] | None:
    """A queue's ``hosted_agents`` (None for a self-hosted queue), from its columns."""
    shape = instance_shapes.SHAPES.get(instance_shape)  # Queue.shape
    if shape is None:
        return None
    platform_settings: dict[str, Any] = {}
    if shape.machine_type == "linux":
        platform_settings["linux"] = {"agent_image_ref": empty_to_none(agent_image_ref)}
    return {
        "instance_shape": {
            "machine_type": shape.machine_type,
            "architecture": shape.architecture,
            "cpu": shape.cpu,
            "memory": shape.memory,
            "name": shape.name,
        },
        "platform_settings": platform_settings,
    }


#: A queue's ``graphql_id`` of its primary key (in the class, ``graphql_id`` is the field).
QUEUE_GRAPHQL_ID = partial(graphql_id, "ClusterQueue")


class QueueSerializer(ReadSerializer):
    PLAIN_JSON = True  # strings, booleans, None and integers only

    #: Fields a queue shows only when they apply (see ``to_representation``).
    OPTIONAL_FIELDS = ("retry_agent_affinity", "hosted_agents")

    id = serializers.UUIDField(read_only=True)
    graphql_id = serializers.SerializerMethodField()
    key = serializers.CharField(read_only=True)
    description = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()
    cluster_url = serializers.SerializerMethodField()
    retry_agent_affinity = serializers.ChoiceField(
        choices=RetryAgentAffinity.choices,
        read_only=True,
        help_text="Only on self-hosted queues.",
    )
    dispatch_paused = serializers.BooleanField(read_only=True)
    dispatch_paused_by = UserSerializer(read_only=True, allow_null=True)
    dispatch_paused_at = TimestampField(allow_null=True)
    dispatch_paused_note = serializers.SerializerMethodField()
    created_at = TimestampField()
    created_by = UserSerializer(read_only=True, allow_null=True)
    hosted = serializers.BooleanField(read_only=True)
    hosted_agents = serializers.SerializerMethodField()

    def to_representation(self, queue: Queue) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(queue)
        data.pop("retry_agent_affinity" if queue.hosted else "hosted_agents")
        return data

    _queue = Route("api:queue", "cluster_id", "queue_id", organization=True)
    _console = Route("admin:clusters_queue_change", "object_id")
    _cluster = Route("api:cluster", "cluster_id", organization=True)

    @from_columns(plain(QUEUE_GRAPHQL_ID), "pk")
    def get_graphql_id(self, queue: Queue) -> str:
        return QUEUE_GRAPHQL_ID(queue.pk)

    @from_columns(plain(empty_to_none), "description")
    def get_description(self, queue: Queue) -> str | None:
        return empty_to_none(queue.description)

    @from_columns(plain(empty_to_none), "dispatch_paused_note")
    def get_dispatch_paused_note(self, queue: Queue) -> str | None:
        return empty_to_none(queue.dispatch_paused_note)

    @from_columns(_queue.of, cluster_id="cluster_id", queue_id="pk")
    def get_url(self, queue: Queue) -> str:
        return self._queue(cluster_id=queue.cluster_id, queue_id=queue.pk)

    @from_columns(_console.of, object_id="pk")
    def get_web_url(self, queue: Queue) -> str:
        return self._console(object_id=queue.pk)

    @from_columns(_cluster.of, cluster_id="cluster_id")
    def get_cluster_url(self, queue: Queue) -> str:
        return self._cluster(cluster_id=queue.cluster_id)

    @extend_schema_field(HOSTED_AGENTS_SCHEMA)
    @from_columns(plain(shown_hosted_agents), "instance_shape", "agent_image_ref")
    def get_hosted_agents(self, queue: Queue) -> dict[str, Any] | None:
        return shown_hosted_agents(queue.instance_shape, queue.agent_image_ref)


class QueueSerializerSchema(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """drf-spectacular marks every read-only field required; a queue shows either
    ``retry_agent_affinity`` or ``hosted_agents``, so neither is."""

    target_class = QueueSerializer

    def map_serializer(self, auto_schema: AutoSchema, direction: Direction) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(  # type: ignore[no-untyped-call]
            self.target, direction, bypass_extensions=True
        )
        optional = QueueSerializer.OPTIONAL_FIELDS
        schema["required"] = [name for name in schema["required"] if name not in optional]
        return schema


# --- requests --------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "enum": list(instance_shapes.SHAPES)})
class InstanceShapeField(serializers.CharField):
    """A shape name. ``clusters.services`` checks it (unknown shapes, conversions, resizing)."""


def _agent_image_ref_field() -> serializers.CharField:
    return serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=AGENT_IMAGE_REF_MAX_LENGTH,
        help_text="A custom agent image for a hosted Linux queue; blank or null for the default.",
    )


class HostedAgentsCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    instanceShape = InstanceShapeField()
    agentImageRef = _agent_image_ref_field()  # ignored at creation, as on Buildkite


class HostedAgentsCreateSnakeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    instance_shape = InstanceShapeField()
    agent_image_ref = _agent_image_ref_field()  # ignored at creation, as on Buildkite


class HostedAgentsUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    instanceShape = InstanceShapeField(required=False)
    agentImageRef = _agent_image_ref_field()


class HostedAgentsUpdateSnakeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    instance_shape = InstanceShapeField(required=False)
    agent_image_ref = _agent_image_ref_field()


def _hosted_agents(attrs: dict[str, Any]) -> dict[str, Any]:
    """``hostedAgents`` or ``hosted_agents``, in snake_case; ``{}`` if neither was sent."""
    camel, snake = attrs.pop("hostedAgents", None), attrs.pop("hosted_agents", None)
    if camel is not None and snake is not None:
        raise serializers.ValidationError("Send hostedAgents or hosted_agents, not both.")
    if snake is not None:
        return dict(snake)
    renamed = {"instanceShape": "instance_shape", "agentImageRef": "agent_image_ref"}
    return {renamed[name]: value for name, value in (camel or {}).items()}


# What a queue's creation and its update both take. (A comment, not a docstring: drf-spectacular
# would put a docstring into both request schemas.)
class _QueueWriteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    retry_agent_affinity = serializers.ChoiceField(
        choices=RetryAgentAffinity.choices, required=False
    )


class QueueCreateSerializer(_QueueWriteSerializer):
    key = serializers.RegexField(
        QUEUE_KEY_PATTERN,
        max_length=100,
        error_messages={"invalid": "Use only letters, digits, hyphens (-) and underscores (_)."},
    )
    hostedAgents = HostedAgentsCreateSerializer(
        required=False,
        allow_null=True,
        help_text="Makes the queue hosted, with this instance shape. `agentImageRef` is ignored "
        "at creation, as on Buildkite: set it with an update.",
    )
    hosted_agents = HostedAgentsCreateSnakeSerializer(
        required=False, allow_null=True, help_text="`hostedAgents`, in snake_case."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of ``services.queue_create`` (but the cluster and the creator)."""
        hosted_agents = _hosted_agents(attrs)
        blank_nulls(attrs, "description")
        if "instance_shape" in hosted_agents:
            attrs["instance_shape"] = hosted_agents["instance_shape"]
        return attrs


class QueueUpdateSerializer(_QueueWriteSerializer):
    """PUT and PATCH both change only what is sent."""

    hostedAgents = HostedAgentsUpdateSerializer(
        required=False,
        allow_null=True,
        help_text="Resize a hosted queue (within its machine type and architecture), or set the "
        "agent image of a hosted Linux queue: `agentImageRef` goes with `instanceShape` (the "
        "current one when not resizing), as on Buildkite, or the update is 422.",
    )
    hosted_agents = HostedAgentsUpdateSnakeSerializer(
        required=False, allow_null=True, help_text="`hostedAgents`, in snake_case."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of ``services.queue_update`` (but the queue). As on Buildkite, an agent
        image is set together with the instance shape, in the same object (the current shape
        when not resizing); without it the update is refused with Buildkite's message."""
        hosted_agents = _hosted_agents(attrs)
        if "agent_image_ref" in hosted_agents and "instance_shape" not in hosted_agents:
            raise serializers.ValidationError(AGENT_IMAGE_REF_WITHOUT_SHAPE)
        attrs.update(hosted_agents)
        return blank_nulls(attrs, "description", "agent_image_ref")


class QueuePauseDispatchSerializer(serializers.Serializer):  # type: ignore[type-arg]
    dispatch_paused_note = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, help_text="Why dispatch is paused."
    )
    note = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="`dispatch_paused_note` (the name in Buildkite's parameter table).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """``{"note": ...}``; ``dispatch_paused_note`` wins if both are sent."""
        note = attrs.get("dispatch_paused_note") or attrs.get("note") or ""
        return {"note": note}


# --- the environment of a job on a queue ------------------------------------------------------


class QueueReferenceSerializer(ReadSerializer):
    id = serializers.UUIDField(read_only=True)
    key = serializers.CharField(read_only=True)
    hosted = serializers.BooleanField(read_only=True)


class QueueEnvironmentSerializer(ReadSerializer):
    """What a job on the queue receives, as the agent endpoint (``/v3/agent/environment``)
    gives it: the variables, and which part of the platform set each one."""

    # Renders a ``clusters.job_environment.JobEnvironment``, as the agent endpoint does.
    queue = QueueReferenceSerializer(read_only=True)
    env = serializers.DictField(child=serializers.CharField(), read_only=True)
    sources = serializers.DictField(child=serializers.CharField(), read_only=True)
