"""``/v2/operator/registry-signing-keys``: the registry token signing keys, for operators (an API
token of a staff user with ``read_registry_keys`` / ``write_registry_keys``).

``GET`` lists the keys, newest first, with their role (``current`` signs; ``accepted``: refresh
tokens it signed still are; ``retired``; ``expired``); never any private material. ``POST
.../rotate`` issues a new signing key from the CA, as ``registry_keys rotate`` does: only a
process whose ``REGISTRY_KEYS_DIR`` holds the CA's private key can (409 with what to do
otherwise), and every replica signs with the new key within ``REGISTRY_KEYS_RECHECK_SECONDS``
(docs/registry-tokens.md).
"""

from __future__ import annotations

from typing import Any, cast

from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.interface import ApiScope, OperatorAPIView
from controlplane.api.openapi import operation
from registries.key_files import key_folder
from registries.keys import SigningKeyMissing
from registries.selectors import SigningKeyStatus, signing_key_statuses
from registries.services.signing_keys import rotate_keys

TAGS = ["Registry signing keys (operators)"]


class CannotRotateHere(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "cannot_rotate_here"


class SigningKeySerializer(serializers.Serializer[SigningKeyStatus]):
    kid = serializers.CharField(read_only=True)
    role = serializers.ChoiceField(
        choices=["current", "accepted", "retired", "expired"], read_only=True
    )
    issued_at = serializers.DateTimeField(read_only=True)
    expires_at = serializers.DateTimeField(read_only=True)
    accepted_until = serializers.DateTimeField(read_only=True, allow_null=True)


class _SigningKeysView(OperatorAPIView):
    read_scope = ApiScope.READ_REGISTRY_KEYS
    write_scope = ApiScope.WRITE_REGISTRY_KEYS


class SigningKeyListView(_SigningKeysView):
    @operation(
        "registry_signing_keys_list",
        tags=TAGS,
        responses={200: SigningKeySerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return Response(SigningKeySerializer(cast(Any, signing_key_statuses()), many=True).data)


class SigningKeyRotateView(_SigningKeysView):
    @operation(
        "registry_signing_key_rotate",
        tags=TAGS,
        request=None,
        responses={201: SigningKeySerializer},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            keys = rotate_keys(key_folder())
        except SigningKeyMissing as exc:
            raise CannotRotateHere(str(exc)) from None
        current = next(s for s in signing_key_statuses() if s.kid == keys.current.kid)
        return Response(SigningKeySerializer(current).data, status=status.HTTP_201_CREATED)
