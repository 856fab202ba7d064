"""The operators' endpoints (their URLs are here): the signing keys (``api/signing_keys.py``) and
``/v2/operator/registry-backends``: the registry backends, for operators (an API token of a
staff user with ``read_registry_backends`` / ``write_registry_backends``).

``GET`` lists them (with how many registries each holds), ``POST`` adds one, ``GET .../{name}``
shows one, ``PATCH .../{name}`` changes its weight, labels, capacity, state (``draining`` stops
new placements), addresses or token service. Writes go through
``registries.services.backends``; bad input is 422 with a ``message`` and writes nothing.
"""

from __future__ import annotations

from typing import Any, cast

from django.db.models import Count, Q, QuerySet
from django.urls import path
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.interface import ApiScope, OperatorAPIView
from controlplane.api.openapi import operation
from registries.api.maintenance import GarbageCollectionListView, GarbageCollectionView
from registries.api.signing_keys import SigningKeyListView, SigningKeyRotateView
from registries.backends import Backend
from registries.models import BackendState, RegistryBackend, State, StorageKind
from registries.services.backends import CHANGEABLE, MAX_WHOLE, backend_create, backend_update

TAGS = ["Registry backends (operators)"]


class RegistryBackendSerializer(serializers.Serializer[RegistryBackend]):
    """A backend as it is used: a blank address of the ``default`` backend shows the setting it
    follows."""

    name = serializers.CharField(read_only=True)
    api_url = serializers.SerializerMethodField()
    public_host = serializers.SerializerMethodField()
    token_service = serializers.SerializerMethodField()
    storage = serializers.ChoiceField(choices=StorageKind.choices, read_only=True)
    labels = serializers.DictField(child=serializers.CharField(), read_only=True)
    weight = serializers.IntegerField(read_only=True)
    capacity = serializers.IntegerField(read_only=True, allow_null=True)
    state = serializers.ChoiceField(choices=BackendState.choices, read_only=True)
    gc_config = serializers.CharField(
        read_only=True,
        help_text="The registry configuration garbage-collect runs on (blank: REGISTRY_GC_CONFIG).",
    )
    registries = serializers.SerializerMethodField()
    hosts_changed_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def get_api_url(self, backend: RegistryBackend) -> str:
        return Backend.of(backend).api_url

    def get_public_host(self, backend: RegistryBackend) -> str:
        return Backend.of(backend).public_host

    def get_token_service(self, backend: RegistryBackend) -> str:
        return Backend.of(backend).token_service

    def get_registries(self, backend: RegistryBackend) -> int:
        """Registries on it, not deleted."""
        return int(getattr(backend, "registry_total", 0))


class RegistryBackendCreateSerializer(serializers.Serializer[Any]):
    name = serializers.SlugField(max_length=63)
    api_url = serializers.CharField(max_length=512)
    public_host = serializers.CharField(max_length=255)
    token_service = serializers.CharField(max_length=255)
    storage = serializers.ChoiceField(choices=StorageKind.choices, default=StorageKind.FILESYSTEM)
    labels = serializers.DictField(child=serializers.CharField(max_length=255), default=dict)
    weight = serializers.IntegerField(min_value=0, max_value=MAX_WHOLE, default=100)
    capacity = serializers.IntegerField(
        min_value=0, max_value=MAX_WHOLE, allow_null=True, default=None
    )
    state = serializers.ChoiceField(choices=BackendState.choices, default=BackendState.ACTIVE)
    gc_config = serializers.CharField(
        max_length=512, allow_blank=True, trim_whitespace=False, default=""
    )


class RegistryBackendUpdateSerializer(serializers.Serializer[Any]):
    api_url = serializers.CharField(max_length=512, required=False)
    public_host = serializers.CharField(max_length=255, required=False)
    token_service = serializers.CharField(max_length=255, required=False)
    labels = serializers.DictField(child=serializers.CharField(max_length=255), required=False)
    weight = serializers.IntegerField(min_value=0, max_value=MAX_WHOLE, required=False)
    capacity = serializers.IntegerField(
        min_value=0, max_value=MAX_WHOLE, allow_null=True, required=False
    )
    state = serializers.ChoiceField(choices=BackendState.choices, required=False)
    gc_config = serializers.CharField(
        max_length=512, allow_blank=True, trim_whitespace=False, required=False
    )


def _backends() -> QuerySet[RegistryBackend]:
    return RegistryBackend.objects.annotate(
        registry_total=Count("registries", filter=~Q(registries__state=State.DELETED))
    ).order_by("name")


def _valid(serializer_class: type[serializers.Serializer[Any]], data: Any) -> dict[str, Any]:
    """The request body as ``serializer_class`` reads it; 422 for a field it does not know."""
    if not isinstance(data, dict):
        raise serializers.ValidationError({"non_field_errors": ["Send a JSON object."]})
    unknown = sorted(set(data) - set(serializer_class().fields))
    if unknown:
        raise serializers.ValidationError({unknown[0]: ["This field cannot be set here."]})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class _BackendsView(OperatorAPIView):
    read_scope = ApiScope.READ_REGISTRY_BACKENDS
    write_scope = ApiScope.WRITE_REGISTRY_BACKENDS

    def get_backend(self, name: str) -> RegistryBackend:
        backend = _backends().filter(name=name).first()
        if backend is None:
            raise exceptions.NotFound("No registry backend found")
        return backend

    def show(self, backend: RegistryBackend, code: int = status.HTTP_200_OK) -> Response:
        return Response(RegistryBackendSerializer(backend).data, status=code)


class RegistryBackendListView(_BackendsView):
    @operation(
        "registry_backends_list",
        tags=TAGS,
        responses={200: RegistryBackendSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return Response(RegistryBackendSerializer(cast(Any, _backends()), many=True).data)

    @operation(
        "registry_backend_create",
        tags=TAGS,
        request=RegistryBackendCreateSerializer,
        responses={201: RegistryBackendSerializer},
    )
    def post(self, request: Request) -> Response:
        created = backend_create(**_valid(RegistryBackendCreateSerializer, request.data))
        return self.show(self.get_backend(created.name), status.HTTP_201_CREATED)


class RegistryBackendView(_BackendsView):
    @operation("registry_backend_get", tags=TAGS, responses={200: RegistryBackendSerializer})
    def get(self, request: Request, name: str) -> Response:
        return self.show(self.get_backend(name))

    @operation(
        "registry_backend_update",
        tags=TAGS,
        request=RegistryBackendUpdateSerializer,
        responses={200: RegistryBackendSerializer},
    )
    def patch(self, request: Request, name: str) -> Response:
        backend = self.get_backend(name)
        changes = _valid(RegistryBackendUpdateSerializer, request.data)
        backend_update(backend=backend, **{k: v for k, v in changes.items() if k in CHANGEABLE})
        return self.show(self.get_backend(name))


app_name = "registries-operator-api"

urlpatterns = [
    path("registry-backends", RegistryBackendListView.as_view(), name="registry-backends"),
    path("registry-backends/<str:name>", RegistryBackendView.as_view(), name="registry-backend"),
    path(
        "registry-backends/<str:name>/garbage-collections",
        GarbageCollectionListView.as_view(),
        name="registry-backend-garbage-collections",
    ),
    path(
        "registry-backends/<str:name>/garbage-collections/<uuid:collection_id>",
        GarbageCollectionView.as_view(),
        name="registry-backend-garbage-collection",
    ),
    path("registry-signing-keys", SigningKeyListView.as_view(), name="registry-signing-keys"),
    path(
        "registry-signing-keys/rotate",
        SigningKeyRotateView.as_view(),
        name="registry-signing-key-rotate",
    ),
]
