"""The registry tokens' settings, star-imported by ``controlplane/settings.py`` (kept apart so
that it stays short): the token endpoint the registries send clients to, what the tokens say,
how long they live, and the key-encryption key of the signing keys in the database
(docs/registry-tokens.md). ``REGISTRY_KEYS_DIR`` (the CA's files) stays in settings.py: its
default is under the local state folder.
"""

from __future__ import annotations

from controlplane.env import env, env_float, env_int

__all__ = [
    "REGISTRY_TOKEN_REALM",
    "REGISTRY_TOKEN_SERVICE",
    "REGISTRY_TOKEN_ISSUER",
    "REGISTRY_KEYS_ENCRYPTION_KEYS",
    "REGISTRY_KEYS_RECHECK_SECONDS",
    "REGISTRY_TOKEN_PULL_TTL_SECONDS",
    "REGISTRY_TOKEN_PUSH_TTL_SECONDS",
    "REGISTRY_REFRESH_TOKEN_TTL_SECONDS",
    "REGISTRY_JOB_CREDENTIAL_TTL_SECONDS",
    "REGISTRY_CA_CERT_DAYS",
    "REGISTRY_SIGNING_CERT_DAYS",
]

# --- Registry tokens ------------------------------------------------------------------------
# The registry sends clients to REGISTRY_TOKEN_REALM (our token endpoint) for a JWT whose "iss"
# is REGISTRY_TOKEN_ISSUER and whose "aud" is REGISTRY_TOKEN_SERVICE; `manage.py registry_config`
# writes all three into the registry's configuration. Keys: `manage.py registry_keys init`.
REGISTRY_TOKEN_REALM = env(
    "REGISTRY_TOKEN_REALM", "http://127.0.0.1:8000/registry/token", required_in_production=True
)
REGISTRY_TOKEN_SERVICE = env("REGISTRY_TOKEN_SERVICE", "hosted-registry")
REGISTRY_TOKEN_ISSUER = env("REGISTRY_TOKEN_ISSUER", "controlplane")
# The signing keys live in the database, their private keys encrypted with a key-encryption key:
# comma-separated Fernet keys, the first encrypts and all decrypt (KEK rotation:
# docs/registry-tokens.md). Empty: one derived from DJANGO_SECRET_KEY (HKDF), which every replica
# shares already. Each process looks for a newer key at most every RECHECK seconds.
REGISTRY_KEYS_ENCRYPTION_KEYS = env("REGISTRY_KEYS_ENCRYPTION_KEYS", "")
REGISTRY_KEYS_RECHECK_SECONDS = env_float("REGISTRY_KEYS_RECHECK_SECONDS", 5.0)
# Token lifetimes: pull-only grants are short; a grant that may push lives long enough for a big
# push to finish; refresh tokens (docker login's stored identity token) longest of all.
REGISTRY_TOKEN_PULL_TTL_SECONDS = env_int("REGISTRY_TOKEN_PULL_TTL_SECONDS", 300)
REGISTRY_TOKEN_PUSH_TTL_SECONDS = env_int("REGISTRY_TOKEN_PUSH_TTL_SECONDS", 3600)
REGISTRY_REFRESH_TOKEN_TTL_SECONDS = env_int("REGISTRY_REFRESH_TOKEN_TTL_SECONDS", 86400)
# A job's registry credential (what the agent hook exchanges the agent token for) lasts the job:
# hosted Linux jobs may run up to 8 hours; the pre-exit hook revokes it sooner.
REGISTRY_JOB_CREDENTIAL_TTL_SECONDS = env_int(
    "REGISTRY_JOB_CREDENTIAL_TTL_SECONDS", 8 * 3600, minimum=1
)
REGISTRY_CA_CERT_DAYS = env_int("REGISTRY_CA_CERT_DAYS", 3650)
REGISTRY_SIGNING_CERT_DAYS = env_int("REGISTRY_SIGNING_CERT_DAYS", 365)
