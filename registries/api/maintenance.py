"""``/v2/operator/registry-backends/{name}/garbage-collections``: a backend's garbage collections
in a maintenance window (docs/retention.md#garbage-collection), for operators (an API token of a
staff user with ``read_registry_backends`` / ``write_registry_backends``, as the backends).

``POST`` asks for one (202 with it, queued: a maintenance worker runs it; 409 with a ``message``
naming the running one while another holds the backend's window), ``GET`` lists the latest
(``MAX_LISTED``, newest first) and ``GET .../{id}`` shows one with its progress and, after the
verification, what it found missing (``failures``, the first ``MAX_FAILURES``)."""

from __future__ import annotations

import uuid
from typing import Any, cast

from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.interface import ApiScope, OperatorAPIView
from controlplane.api.openapi import ErrorSerializer, operation
from registries.maintenance import CollectionState, CollectionTrigger, GarbageCollection
from registries.models import RegistryBackend
from registries.services import CollectionActive, collection_request

TAGS = ["Registry backends (operators)"]
MAX_LISTED = 50
MAX_FAILURES = 100


class CollectionRunning(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "collection_running"


class VerificationFailureSerializer(serializers.Serializer[Any]):
    registry = serializers.UUIDField(source="registry_id", read_only=True)
    repository = serializers.CharField(read_only=True)
    tag = serializers.CharField(read_only=True)
    kind = serializers.CharField(read_only=True)
    digest = serializers.CharField(read_only=True)
    parent_digest = serializers.CharField(read_only=True)
    detail = serializers.CharField(read_only=True)


class GarbageCollectionSerializer(serializers.Serializer[GarbageCollection]):
    id = serializers.UUIDField(read_only=True)
    backend = serializers.CharField(source="backend.name", read_only=True)
    state = serializers.ChoiceField(choices=CollectionState.choices, read_only=True)
    trigger = serializers.ChoiceField(choices=CollectionTrigger.choices, read_only=True)
    requested_by = serializers.CharField(read_only=True)
    progress = serializers.DictField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    state_changed_at = serializers.DateTimeField(read_only=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)
    delete_untagged = serializers.BooleanField(read_only=True)
    delete_untagged_reason = serializers.CharField(read_only=True)
    storage_bytes_before = serializers.IntegerField(read_only=True, allow_null=True)
    storage_bytes_after = serializers.IntegerField(read_only=True, allow_null=True)
    freed_bytes = serializers.IntegerField(read_only=True, allow_null=True)
    usage_bytes_before = serializers.IntegerField(read_only=True, allow_null=True)
    usage_bytes_after = serializers.IntegerField(read_only=True, allow_null=True)
    blobs_deleted = serializers.IntegerField(read_only=True)
    manifests_deleted = serializers.IntegerField(read_only=True)
    uploads_purged = serializers.IntegerField(read_only=True)
    tags_verified = serializers.IntegerField(read_only=True)
    blobs_verified = serializers.IntegerField(read_only=True)
    missing = serializers.IntegerField(read_only=True)
    error = serializers.CharField(read_only=True)


class GarbageCollectionDetailSerializer(GarbageCollectionSerializer):
    failures = serializers.SerializerMethodField()

    def get_failures(self, collection: GarbageCollection) -> list[dict[str, Any]]:
        failures = collection.failures.all()[:MAX_FAILURES]
        return list(VerificationFailureSerializer(failures, many=True).data)


class _CollectionsView(OperatorAPIView):
    read_scope = ApiScope.READ_REGISTRY_BACKENDS
    write_scope = ApiScope.WRITE_REGISTRY_BACKENDS

    def get_backend(self, name: str) -> RegistryBackend:
        backend = RegistryBackend.objects.filter(name=name).first()
        if backend is None:
            raise exceptions.NotFound("No registry backend found")
        return backend


class GarbageCollectionListView(_CollectionsView):
    @operation(
        "registry_backend_garbage_collections_list",
        tags=TAGS,
        responses={200: GarbageCollectionSerializer(many=True)},
    )
    def get(self, request: Request, name: str) -> Response:
        backend = self.get_backend(name)
        collections = backend.collections.select_related("backend")[:MAX_LISTED]
        return Response(GarbageCollectionSerializer(cast(Any, collections), many=True).data)

    @operation(
        "registry_backend_garbage_collection_create",
        tags=TAGS,
        responses={
            202: GarbageCollectionDetailSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="Another collection holds the backend's window"
            ),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        backend = self.get_backend(name)
        try:
            collection = collection_request(
                backend, trigger=CollectionTrigger.OPERATOR, actor=self.token.user.get_username()
            )
        except CollectionActive as exc:
            raise CollectionRunning(str(exc)) from exc
        data = GarbageCollectionDetailSerializer(collection).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


class GarbageCollectionView(_CollectionsView):
    @operation(
        "registry_backend_garbage_collection_get",
        tags=TAGS,
        responses={200: GarbageCollectionDetailSerializer},
    )
    def get(self, request: Request, name: str, collection_id: uuid.UUID) -> Response:
        backend = self.get_backend(name)
        collection = (
            GarbageCollection.objects.filter(backend=backend, pk=collection_id)
            .select_related("backend")
            .first()
        )
        if collection is None:
            raise exceptions.NotFound("No garbage collection found")
        return Response(GarbageCollectionDetailSerializer(collection).data)
