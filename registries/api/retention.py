"""Retention policies in the REST API (docs/retention.md#retention-policies):

- ``/v2/organizations/{org}/registry-retention-policy``: the organization's default (GET, PUT,
  DELETE);
- ``.../clusters/{cluster}/registry/retention-policy``: the cluster's override (PUT, DELETE),
  and (GET) the policy in force with where it comes from;
- ``POST .../registry/retention-policy/dry-run``: what the policy (or one sent in the body)
  would delete now, and what it keeps and why;
- ``POST .../registry/cleanup``: apply the policy now (synchronously: bounded by the registry's
  tags and by ``REGISTRY_RETENTION_TIME_LIMIT_SECONDS``), answering the run;
  ``GET .../registry/retention-runs``: the runs, newest first.

PUT replaces the whole policy (a rule left out takes its default). The rules are checked by
``registries.services.retention_policy_validate`` (422 by field, nothing written). Reads need
``read_registries``, the rest ``write_registries``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.interface import Cluster
from controlplane.api.fields import TimestampField
from controlplane.api.openapi import ErrorSerializer, operation
from controlplane.api.serializers import ReadSerializer
from registries import services
from registries.api.usage import Conflict
from registries.api.views import _RegistryAPIView
from registries.retention import (
    FROM_ORGANIZATION,
    POLICY_FIELDS,
    RetentionPolicy,
    RetentionRun,
    RetentionTrigger,
    policy_for,
    policy_values,
)

TAGS = ["Registry retention"]


class RetentionRulesSerializer(serializers.Serializer[Any]):
    """A policy's rules (the body of a PUT, and of a dry run that tries its own policy)."""

    enabled = serializers.BooleanField(
        required=False, default=True, help_text="False: nothing is deleted."
    )
    keep_newest = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="Keep the newest N tags of each repository (by push time); null: no such rule.",
    )  # fmt: skip
    delete_older_than_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="Delete tags pushed more than D days ago; null: no such rule.",
    )  # fmt: skip
    unless_pulled_within_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="... unless pulled within the last P days; null: however recently pulled.",
    )  # fmt: skip
    delete_untagged = serializers.BooleanField(
        required=False, default=False,
        help_text="Let garbage collection delete manifests no tag points to, where that is safe.",
    )  # fmt: skip
    protected_tags = serializers.ListField(
        child=serializers.CharField(), required=False,
        help_text='Glob patterns of tags never deleted (default ["latest", "v*", "release-*"]).',
    )  # fmt: skip
    recent_hours = serializers.IntegerField(
        required=False, min_value=0,
        help_text="A tag pushed or pulled within this many hours is never deleted (default 24).",
    )  # fmt: skip


class RetentionPolicySerializer(ReadSerializer):
    """The policy in force and where it comes from; every rule null when none applies."""

    set_by = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="cluster (its override), organization (its default), or null: no policy, "
        "nothing is deleted.",
    )  # fmt: skip
    enabled = serializers.BooleanField(read_only=True, allow_null=True)
    keep_newest = serializers.IntegerField(read_only=True, allow_null=True)
    delete_older_than_days = serializers.IntegerField(read_only=True, allow_null=True)
    unless_pulled_within_days = serializers.IntegerField(read_only=True, allow_null=True)
    delete_untagged = serializers.BooleanField(read_only=True, allow_null=True)
    protected_tags = serializers.ListField(
        child=serializers.CharField(), read_only=True, allow_null=True
    )
    recent_hours = serializers.IntegerField(read_only=True, allow_null=True)
    updated_at = TimestampField(allow_null=True)


class PlannedDeletionSerializer(ReadSerializer):
    repository = serializers.CharField(read_only=True, help_text="Relative to the namespace.")
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    digest = serializers.CharField(read_only=True, help_text="The manifest deleted.")
    reason = serializers.CharField(read_only=True)
    bytes = serializers.IntegerField(read_only=True, help_text="The manifest and its blobs.")


class KeptTagSerializer(ReadSerializer):
    repository = serializers.CharField(read_only=True)
    tag = serializers.CharField(read_only=True)
    digest = serializers.CharField(read_only=True)
    reason = serializers.CharField(read_only=True, help_text="What keeps the selected tag.")


class DryRunSerializer(ReadSerializer):
    """What the policy deletes now (exactly what a cleanup run would), and what it keeps."""

    set_by = serializers.CharField(
        read_only=True, allow_null=True, help_text="cluster, organization, request, or null."
    )
    deletions = PlannedDeletionSerializer(many=True, read_only=True)
    kept = KeptTagSerializer(many=True, read_only=True, help_text="Selected, but protected.")


class RetentionRunSerializer(ReadSerializer):
    """One application of the registry's policy."""

    id = serializers.UUIDField(read_only=True)
    trigger = serializers.ChoiceField(choices=RetentionTrigger.choices, read_only=True)
    state = serializers.CharField(read_only=True, help_text="running, succeeded, failed.")
    policy = serializers.DictField(read_only=True, help_text="The rules applied, and source.")
    deleted = PlannedDeletionSerializer(many=True, read_only=True)
    errors = serializers.ListField(child=serializers.DictField(), read_only=True)  # type: ignore[assignment]
    usage_bytes_before = serializers.IntegerField(read_only=True)
    usage_bytes_after = serializers.IntegerField(read_only=True, allow_null=True)
    freed_bytes = serializers.IntegerField(read_only=True, allow_null=True)
    started_at = TimestampField()
    finished_at = TimestampField(allow_null=True)


def _policy_json(policy: RetentionPolicy | None, source: str | None) -> dict[str, Any]:
    rules = policy_values(policy) if policy is not None else dict.fromkeys(POLICY_FIELDS)
    updated = policy.updated_at if policy is not None else None
    return {"set_by": source, **rules, "updated_at": updated}


def _rules(request: Request) -> dict[str, Any]:
    """The body's rules, as sent: the service checks them (and names unknown fields)."""
    if not isinstance(request.data, dict):
        raise exceptions.ParseError("The body must be a JSON object of the policy's rules.")
    return dict(request.data)


_WRITE_RESPONSES = {200: RetentionPolicySerializer}


class OrganizationRetentionPolicyView(_RegistryAPIView):
    """``/v2/organizations/{org}/registry-retention-policy``: the default policy of the
    organization's clusters' registries (a cluster's override replaces it)."""

    def _respond(self) -> Response:
        policy = RetentionPolicy.objects.filter(organization=self.organization, cluster=None)
        found = policy.first()
        data = _policy_json(found, FROM_ORGANIZATION if found else None)
        return self.respond(RetentionPolicySerializer, data)

    @operation("registry_retention_policy_get", tags=TAGS, responses=_WRITE_RESPONSES)
    def get(self, request: Request, org_slug: str) -> Response:
        return self._respond()

    @operation(
        "registry_retention_policy_update",
        tags=TAGS,
        request=RetentionRulesSerializer,
        responses=_WRITE_RESPONSES,
    )
    def put(self, request: Request, org_slug: str) -> Response:
        services.retention_policy_set(organization=self.organization, values=_rules(request))
        return self._respond()

    @operation("registry_retention_policy_delete", tags=TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str) -> Response:
        services.retention_policy_delete(organization=self.organization)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ClusterRetentionPolicyView(_RegistryAPIView):
    """``.../clusters/{cluster}/registry/retention-policy``: the policy in force for the
    cluster's registry (its override, else the organization's default)."""

    def _respond(self, cluster: Cluster) -> Response:
        return self.respond(RetentionPolicySerializer, _policy_json(*policy_for(cluster.pk)))

    @operation("registry_cluster_retention_policy_get", tags=TAGS, responses=_WRITE_RESPONSES)
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        return self._respond(self.get_cluster(cluster_id))

    @operation(
        "registry_cluster_retention_policy_update",
        tags=TAGS,
        request=RetentionRulesSerializer,
        responses=_WRITE_RESPONSES,
    )
    def put(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        services.retention_policy_set(
            organization=self.organization, cluster=cluster, values=_rules(request)
        )
        return self._respond(cluster)

    @operation("registry_cluster_retention_policy_delete", tags=TAGS, responses={204: None})
    def delete(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        services.retention_policy_delete(organization=self.organization, cluster=cluster)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RetentionDryRunView(_RegistryAPIView):
    """``POST .../registry/retention-policy/dry-run``: nothing is deleted (a POST because it may
    carry a policy to try, and computing it reads every tag)."""

    read_scope = write_scope = _RegistryAPIView.read_scope

    @operation(
        "registry_retention_dry_run",
        tags=TAGS,
        request=RetentionRulesSerializer,
        responses={200: DryRunSerializer},
    )
    def post(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        cluster = self.get_cluster(cluster_id)
        registry = self.get_registry(cluster, events=False)
        tried = _rules(request)
        policy = None
        if tried:
            policy = services.retention_policy_validate(
                organization=self.organization, cluster=cluster, values=tried
            )
        plan = services.retention_plan(registry, policy=policy)
        data = {"set_by": plan.source, "deletions": plan.deletions, "kept": plan.kept}
        return self.respond(DryRunSerializer, data)


class RetentionCleanupView(_RegistryAPIView):
    @operation(
        "registry_cleanup",
        tags=TAGS,
        responses={
            201: RetentionRunSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="The registry is not ready, or a run is under way"
            ),
        },
        description="Apply the registry's retention policy now; answers the run it recorded "
        "(a deletion that failed is in its errors, the others went ahead).",
    )
    def post(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        registry = self.get_registry(self.get_cluster(cluster_id), events=False)
        try:
            run = services.retention_apply(registry, trigger=RetentionTrigger.MANUAL)
        except (services.RegistryNotReady, services.RetentionRunning) as exc:
            raise Conflict(str(exc)) from exc
        return self.respond(RetentionRunSerializer, run, status.HTTP_201_CREATED)


class RetentionRunListView(_RegistryAPIView):
    @operation(
        "registry_retention_runs_list",
        tags=TAGS,
        responses={200: RetentionRunSerializer(many=True)},
        paginated=True,
    )
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        registry = self.get_registry(self.get_cluster(cluster_id), events=False)
        runs = RetentionRun.objects.filter(registry=registry).order_by("-started_at", "pk")
        return self.paginated(runs, RetentionRunSerializer)
