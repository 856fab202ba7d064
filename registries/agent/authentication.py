"""How the job credential endpoint knows the credential a request presents
(``DELETE /v3/agent/registry-credentials/current``, the ``pre-exit`` hook): ``Authorization:
Token <credential>`` (or ``Bearer``). Giving a credential up needs no more than holding it, so a
revoked or expired one is still known here; using one for the registry goes through
``registries.selectors.registry_credential_for_secret``, which checks it still works."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from controlplane.api.authentication import authorization_secret
from registries.models import JobCredential
from registries.selectors import job_credential_for_secret

BAD_CREDENTIAL = "Unknown job credential."
SEND_CREDENTIAL = "Send the job credential as 'Authorization: Token <credential>'."


class JobCredentialAuthentication(authentication.BaseAuthentication):
    """The job credential itself, known to us, whether or not it still works."""

    def authenticate(self, request: Request) -> tuple[None, JobCredential] | None:
        secret = authorization_secret(
            request, schemes={"token", "bearer"}, malformed=SEND_CREDENTIAL
        )
        if secret is None:
            return None
        credential = job_credential_for_secret(secret)
        if credential is None:
            raise exceptions.AuthenticationFailed(BAD_CREDENTIAL)
        return None, credential

    def authenticate_header(self, request: Request) -> str:
        return 'Token realm="job credential"'
