"""Job-scoped registry credentials: what the agent's ``environment`` hook exchanges the cluster
agent token for, so that a job pushes and pulls without ever holding the agent token.

A credential is a secret shown once (``bkrc_`` and 256 random bits; only its SHA-256 is kept),
bound to the agent token that asked for it and, when the agent gave one, to the job
(``BUILDKITE_JOB_ID``). It expires after ``REGISTRY_JOB_CREDENTIAL_TTL_SECONDS`` (never after its
agent token), and the ``pre-exit`` hook revokes it when the job ends. Whether it still works is
checked on every use (``registries.selectors.registry_credential_for_secret``), so revoking the
agent token or deleting the cluster ends every credential at once.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from clusters.interface import ClusterAgentToken
from controlplane.credentials import new_secret, revoke_once, shown_prefix
from registries.models import JOB_CREDENTIAL_PREFIX, JobCredential

logger = logging.getLogger("registries.services")

#: The user name written next to the secret in the job's auth file; the token endpoint accepts
#: any user name, as it does for agent tokens.
JOB_CREDENTIAL_USERNAME = "buildkite-job"
#: Buildkite job ids are UUIDs; anything short and plain is accepted for other agents.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def job_credential_create(
    *, agent_token: ClusterAgentToken, job_id: str = ""
) -> tuple[JobCredential, str]:
    """A credential for a job run by holders of ``agent_token``. Returns it and its secret,
    which is never stored."""
    if job_id and not JOB_ID_PATTERN.fullmatch(job_id):
        raise ValidationError(
            {"job_id": "Use at most 64 letters, digits, '.', '_' or '-' (BUILDKITE_JOB_ID)."}
        )
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.REGISTRY_JOB_CREDENTIAL_TTL_SECONDS)
    if agent_token.expires_at is not None:
        expires_at = min(expires_at, agent_token.expires_at)
    secret = new_secret(JOB_CREDENTIAL_PREFIX)
    credential = JobCredential.objects.create(
        agent_token=agent_token,
        job_id=job_id,
        secret_hash=JobCredential.hash_secret(secret),
        secret_prefix=shown_prefix(secret, JOB_CREDENTIAL_PREFIX),
        created_at=now,
        expires_at=expires_at,
    )
    logger.info(
        "job_credential.created",
        extra={
            "cluster_id": str(agent_token.cluster_id),
            "token_id": str(agent_token.pk),
            "credential_id": str(credential.pk),
            "job_id": job_id,
        },
    )
    return credential, secret


def job_credential_revoke(*, credential: JobCredential) -> JobCredential:
    """Revoke a credential at once; revoking it again keeps the first time."""
    revoke_once(credential)
    logger.info(
        "job_credential.revoked",
        extra={"credential_id": str(credential.pk), "job_id": credential.job_id},
    )
    return credential
