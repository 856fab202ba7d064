"""``/v3/agent/registry-credentials``: job-scoped registry credentials for agents.

- ``POST /v3/agent/registry-credentials`` with the cluster agent token (``Authorization: Token
  <agent token>``, from an address its IP allow-list admits, as for the agent environment
  endpoint), body ``{"job_id": "<BUILDKITE_JOB_ID>"}`` (optional): 201 with the credential's
  ``id``, ``username``, ``secret`` (shown only here), ``expires_at``, ``job_id`` and
  ``registry_host``. The secret is the password of an HTTP Basic ``auth`` entry in the job's
  auth file, which the token endpoint accepts as it accepts the agent token.
- ``DELETE /v3/agent/registry-credentials/current`` with the credential itself
  (``Authorization: Token <credential>``): 204, and the credential works no more. Possession of
  a credential is enough to give it up, so the ``pre-exit`` hook needs no agent token; an expired
  or revoked credential may be revoked again (204), an unknown secret is 401.

Both answer ``Cache-Control: no-store``, and errors as JSON ``{"message": ...}``.
"""

from __future__ import annotations

from typing import Any, cast

from rest_framework import exceptions, status
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clusters.interface import ClusterAgentToken, ClusterAgentTokenAuthentication
from controlplane.api.caching import no_store
from controlplane.api.parsers import JSONParser
from registries.agent.authentication import SEND_CREDENTIAL, JobCredentialAuthentication
from registries.models import JobCredential
from registries.selectors import registry_host_for_cluster
from registries.services import (
    JOB_CREDENTIAL_USERNAME,
    job_credential_create,
    job_credential_revoke,
)


class JobCredentialsView(APIView):
    """Exchange the cluster agent token for a job's registry credential."""

    authentication_classes = [ClusterAgentTokenAuthentication]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser, FormParser]

    def post(self, request: Request) -> Response:
        token = cast(ClusterAgentToken, request.auth)  # the only authentication class
        if not isinstance(request.data, dict):
            raise exceptions.ParseError('Send a JSON object or a form: {"job_id": "..."}.')
        job_id = request.data.get("job_id") or ""
        if not isinstance(job_id, str):
            raise exceptions.ValidationError({"job_id": ["Must be a string."]})
        credential, secret = job_credential_create(agent_token=token, job_id=job_id)
        body: dict[str, Any] = {
            "id": str(credential.pk),
            "username": JOB_CREDENTIAL_USERNAME,
            "secret": secret,
            "expires_at": credential.expires_at.isoformat().replace("+00:00", "Z"),
            "job_id": credential.job_id,
            # Its registry's backend's public host (the hook takes the host of the URL).
            "registry_host": registry_host_for_cluster(token.cluster_id),
        }
        return Response(body, status=status.HTTP_201_CREATED)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        # Errors too: never cache this exchange.
        return no_store(super().finalize_response(request, response, *args, **kwargs))


class CurrentJobCredentialView(APIView):
    """Revoke the job credential the request presents (the ``pre-exit`` hook)."""

    authentication_classes = [JobCredentialAuthentication]
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]

    def delete(self, request: Request) -> Response:
        if request.auth is None:
            raise exceptions.NotAuthenticated(SEND_CREDENTIAL)
        job_credential_revoke(credential=cast(JobCredential, request.auth))
        return no_store(Response(status=status.HTTP_204_NO_CONTENT))
