"""A registry's usage and inventory in the REST API, under
``/v2/organizations/{org}/clusters/{cluster}/registry``:

- ``GET .../usage``: storage in unique blobs, repositories, tags, the last push and pull, when
  the usage scan last ran, the quota, and ``?days=`` days (30 by default, at most 365) of
  pushes, pulls and storage;
- ``GET .../repositories`` (``?sort=name|bytes|last_push``) and
  ``GET .../repositories/{repository}/tags``, paginated like every list;
- ``DELETE .../repositories/{repository}/tags/{tag}`` (``?include_shared_digest=true``): deletes
  the tag's manifest by digest (``registries.services.tag_delete``).

``{repository}`` is the name relative to the namespace, and may contain ``/``. Reads need
``read_registries``, the deletion ``write_registries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.fields import TimestampField
from controlplane.api.openapi import ErrorSerializer, operation
from controlplane.api.serializers import ReadSerializer
from registries import services
from registries.api.serializers import RegistryQuotaSerializer
from registries.api.views import TAGS, _RegistryAPIView, quota_json
from registries.drivers import DriverError
from registries.inventory import Repository
from registries.models import Registry
from registries.quotas import quota_status
from registries.usage_selectors import (
    DEFAULT_DAYS,
    MAX_DAYS,
    REPOSITORY_ORDERS,
    UsagePoint,
    repositories_sorted,
    repository_tags,
    usage_days,
)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class RegistryUnreachable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "registry_unavailable"


@dataclass(frozen=True)
class RegistryUsage:
    registry: Registry
    days: list[UsagePoint]
    quota: dict[str, Any]


def _quota(registry: Registry) -> dict[str, Any]:
    """The registry's usage against the quota that applies to it (one query)."""
    return quota_json(quota_status(registry))


class UsageDaySerializer(ReadSerializer):
    day = serializers.DateField(read_only=True)
    pushes = serializers.IntegerField(read_only=True)
    pulls = serializers.IntegerField(read_only=True)
    bytes = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="Storage at the day's last figure (the day before's if none was taken that "
        "day); null before the first.",
    )


class RegistryUsageSerializer(ReadSerializer):
    """What the registry holds and how it is used."""

    bytes = serializers.IntegerField(
        source="registry.usage_bytes",
        read_only=True,
        help_text="Storage in unique blobs: a layer shared by tags or repositories counts once.",
    )
    repositories = serializers.IntegerField(source="registry.usage_repositories", read_only=True)
    tags = serializers.IntegerField(source="registry.usage_tags", read_only=True)
    last_push_at = TimestampField(source="registry.last_push_at", allow_null=True)
    last_pull_at = TimestampField(source="registry.last_pull_at", allow_null=True)
    scanned_at = TimestampField(
        source="registry.usage_scanned_at",
        allow_null=True,
        help_text="When the usage scan last rebuilt these figures from the registry.",
    )
    quota = RegistryQuotaSerializer(read_only=True)
    days = UsageDaySerializer(many=True, read_only=True, help_text="Oldest first, one a day.")


class RepositorySerializer(ReadSerializer):
    name = serializers.SerializerMethodField(help_text="Relative to the registry's namespace.")
    full_name = serializers.CharField(source="name", read_only=True)
    bytes = serializers.IntegerField(read_only=True)
    tag_count = serializers.IntegerField(read_only=True)
    last_push_at = TimestampField(allow_null=True)
    last_pull_at = TimestampField(allow_null=True)

    def get_name(self, repository: Repository) -> str:
        return str(repository.name).removeprefix(f"{self.context['namespace']}/")


class TagSerializer(ReadSerializer):
    tag = serializers.CharField(source="name", read_only=True)
    digest = serializers.CharField(read_only=True)
    bytes = serializers.IntegerField(
        read_only=True, help_text="The manifest and every blob it references."
    )
    pushed_at = TimestampField()
    last_pulled_at = TimestampField(allow_null=True)


def _query(name: str, help_text: str, type_: Any = str, **kwargs: Any) -> OpenApiParameter:
    return OpenApiParameter(name, type_, OpenApiParameter.QUERY, description=help_text, **kwargs)


def _days(request: Request | HttpRequest) -> int:
    raw = request.GET.get("days") or str(DEFAULT_DAYS)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
        raise exceptions.ParseError(
            f"days must be a whole number from 1 to {MAX_DAYS}, not {raw!r}."
        )
    return int(raw)


def _choice(request: Request | HttpRequest, name: str, choices: list[str], default: str) -> str:
    raw = request.GET.get(name) or default
    if raw not in choices:
        raise exceptions.ParseError(f"{name} must be one of {', '.join(choices)}, not {raw!r}.")
    return raw


class RegistryUsageView(_RegistryAPIView):
    @extend_schema(
        parameters=[_query("days", f"Days of history, 1 to {MAX_DAYS}.", int, default=DEFAULT_DAYS)]
    )
    @operation("registry_usage_get", tags=TAGS, responses={200: RegistryUsageSerializer})
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        registry = self.get_registry(self.get_cluster(cluster_id), events=False)
        days = usage_days(registry, days=_days(request), today=timezone.now().date())
        return self.respond(
            RegistryUsageSerializer, RegistryUsage(registry, days, _quota(registry))
        )


class RepositoryListView(_RegistryAPIView):
    @extend_schema(
        parameters=[_query("sort", "The order.", str, enum=list(REPOSITORY_ORDERS), default="name")]
    )
    @operation(
        "registry_repositories_list",
        tags=TAGS,
        responses={200: RepositorySerializer(many=True)},
        paginated=True,
    )
    def get(self, request: Request, org_slug: str, cluster_id: str) -> Response:
        sort = _choice(request, "sort", list(REPOSITORY_ORDERS), "name")
        registry = self.get_registry(self.get_cluster(cluster_id), events=False)
        self.namespace = registry.namespace
        return self.paginated(repositories_sorted(registry, sort), RepositorySerializer)

    def serializer_context(self, **extra: Any) -> dict[str, Any]:
        return super().serializer_context(namespace=getattr(self, "namespace", ""), **extra)


class TagListView(_RegistryAPIView):
    @operation(
        "registry_tags_list", tags=TAGS, responses={200: TagSerializer(many=True)}, paginated=True
    )
    def get(self, request: Request, org_slug: str, cluster_id: str, repository: str) -> Response:
        registry = self.get_registry(self.get_cluster(cluster_id), events=False)
        full_name = f"{registry.namespace}/{repository}"
        if not Repository.objects.filter(registry=registry, name=full_name).exists():
            raise exceptions.NotFound(f"No repository {repository!r} in this registry")
        return self.paginated(repository_tags(registry, full_name), TagSerializer)


class TagView(_RegistryAPIView):
    @extend_schema(
        parameters=[
            _query(
                "include_shared_digest",
                "Also delete the other tags of the repository on the same manifest (409 "
                "otherwise).",
                bool,
                default=False,
            )
        ]
    )
    @operation(
        "registry_tags_delete",
        tags=TAGS,
        responses={
            204: None,
            409: OpenApiResponse(
                ErrorSerializer,
                description="Other tags share the tag's manifest, or the registry is not ready",
            ),
            503: OpenApiResponse(ErrorSerializer, description="The registry did not answer"),
        },
    )
    def delete(
        self, request: Request, org_slug: str, cluster_id: str, repository: str, tag: str
    ) -> Response:
        shared = _choice(request, "include_shared_digest", ["true", "false"], "false") == "true"
        registry = self.get_registry(self.get_cluster(cluster_id), events=False)
        try:
            services.tag_delete(
                registry=registry, repository=repository, tag=tag, include_shared_digest=shared
            )
        except services.TagNotFound as exc:
            raise exceptions.NotFound(str(exc)) from exc
        except services.TagDeletionRefused as exc:  # not ready, or a shared digest
            raise Conflict(str(exc)) from exc
        except DriverError as exc:  # unreachable, or not answering as it should
            raise RegistryUnreachable(exc.public) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
