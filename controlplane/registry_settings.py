"""Settings of the generated registry configuration for production (``manage.py
registry_config``, docs/operations.md#the-registrys-configuration), star-imported by
``controlplane/settings.py`` (kept apart so that it stays short).

Storage is the local folder ``REGISTRY_STORAGE_DIR`` unless ``REGISTRY_STORAGE=s3``: then an S3
or S3-compatible bucket, with its keys from the environment (without them, the AWS SDK's own
chain: ``AWS_ACCESS_KEY_ID`` in the registry's environment, an instance or pod role). Every
other option is off until set, except upload purging, which is always on. The usage scan's
settings (``REGISTRY_USAGE_SCAN_*``) live here too.
"""

from __future__ import annotations

from controlplane.env import env, env_bool, env_float, env_int, env_list


def _quota_bytes(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be a number of bytes of at least 0")
    return value


__all__ = [
    "REGISTRY_NOTIFICATIONS_KEEP_DAYS",
    "REGISTRY_NOTIFICATIONS_PREVIOUS_TOKENS",
    "REGISTRY_NOTIFICATIONS_SWEEP_SECONDS",
    "REGISTRY_NOTIFICATIONS_TOKEN",
    "REGISTRY_NOTIFICATIONS_URL",
    "REGISTRY_PROMETHEUS_ENABLED",
    "REGISTRY_QUOTA_DEFAULT_BYTES",
    "REGISTRY_REDIS_URL",
    "REGISTRY_S3_ACCESS_KEY",
    "REGISTRY_S3_BUCKET",
    "REGISTRY_S3_ENDPOINT",
    "REGISTRY_S3_REDIRECT",
    "REGISTRY_S3_REGION",
    "REGISTRY_S3_ROOT_DIRECTORY",
    "REGISTRY_S3_SECRET_KEY",
    "REGISTRY_STORAGE",
    "REGISTRY_TLS_CERTIFICATE",
    "REGISTRY_TLS_KEY",
    "REGISTRY_UPLOAD_PURGING_AGE",
    "REGISTRY_UPLOAD_PURGING_INTERVAL",
    "REGISTRY_USAGE_SCAN_BATCH",
    "REGISTRY_USAGE_SCAN_ROUND_SECONDS",
    "REGISTRY_USAGE_SCAN_SECONDS",
    "REGISTRY_USAGE_SCAN_TIME_LIMIT",
]

# "filesystem" (REGISTRY_STORAGE_DIR) or "s3".
REGISTRY_STORAGE = env("REGISTRY_STORAGE", "filesystem")
REGISTRY_S3_BUCKET = env("REGISTRY_S3_BUCKET", "")
REGISTRY_S3_REGION = env("REGISTRY_S3_REGION", "us-east-1")
# An S3-compatible store's URL (http:// means no TLS to it); empty for AWS itself.
REGISTRY_S3_ENDPOINT = env("REGISTRY_S3_ENDPOINT", "")
REGISTRY_S3_ACCESS_KEY = env("REGISTRY_S3_ACCESS_KEY", "")
REGISTRY_S3_SECRET_KEY = env("REGISTRY_S3_SECRET_KEY", "")
REGISTRY_S3_ROOT_DIRECTORY = env("REGISTRY_S3_ROOT_DIRECTORY", "")
# Send clients to the bucket (presigned URLs) for blobs instead of proxying them: only when
# every client can reach the bucket.
REGISTRY_S3_REDIRECT = env_bool("REGISTRY_S3_REDIRECT", False)
# redis://[:password@]host[:port][/db]: the blob-descriptor cache the registry's replicas share.
REGISTRY_REDIS_URL = env("REGISTRY_REDIS_URL", "")
# Abandoned uploads older than the age are deleted, checked every interval (Go durations).
REGISTRY_UPLOAD_PURGING_AGE = env("REGISTRY_UPLOAD_PURGING_AGE", "168h")
REGISTRY_UPLOAD_PURGING_INTERVAL = env("REGISTRY_UPLOAD_PURGING_INTERVAL", "24h")
# Where the registry posts its events, with "Authorization: Bearer <token>"; off until set.
REGISTRY_NOTIFICATIONS_URL = env("REGISTRY_NOTIFICATIONS_URL", "")
REGISTRY_NOTIFICATIONS_TOKEN = env("REGISTRY_NOTIFICATIONS_TOKEN", "")
# The endpoint (POST /registry/notifications) also accepts these (comma-separated) while the
# registries' configurations are rendered again with a new token (docs/usage.md#registry-events).
REGISTRY_NOTIFICATIONS_PREVIOUS_TOKENS = env_list("REGISTRY_NOTIFICATIONS_PREVIOUS_TOKENS", [])
# Applied notifications are kept this many days (the idempotence window), then pruned.
REGISTRY_NOTIFICATIONS_KEEP_DAYS = env_int("REGISTRY_NOTIFICATIONS_KEEP_DAYS", 7, minimum=1)
# Every this many seconds (Celery beat) the notifications whose task was lost are applied.
REGISTRY_NOTIFICATIONS_SWEEP_SECONDS = env_int(
    "REGISTRY_NOTIFICATIONS_SWEEP_SECONDS", 60, minimum=1
)
# PEM files: the registry then serves HTTPS itself.
REGISTRY_TLS_CERTIFICATE = env("REGISTRY_TLS_CERTIFICATE", "")
REGISTRY_TLS_KEY = env("REGISTRY_TLS_KEY", "")
# Distribution's own metrics at /metrics on its debug listener: REGISTRY_DEBUG_ADDR, or
# 127.0.0.1 and the registry's port + 1 (loopback only either way).
REGISTRY_PROMETHEUS_ENABLED = env_bool("REGISTRY_PROMETHEUS_ENABLED", False)

# The usage scan (docs/usage.md, "The usage scan"), which rebuilds each ready registry's
# inventory from the registry itself: each registry is due every REGISTRY_USAGE_SCAN_SECONDS; a
# round (Celery beat, every REGISTRY_USAGE_SCAN_ROUND_SECONDS) enqueues the scans of at most
# REGISTRY_USAGE_SCAN_BATCH due registries, longest due first.
REGISTRY_USAGE_SCAN_SECONDS = env_float("REGISTRY_USAGE_SCAN_SECONDS", 300.0)
REGISTRY_USAGE_SCAN_ROUND_SECONDS = env_float("REGISTRY_USAGE_SCAN_ROUND_SECONDS", 60.0)
REGISTRY_USAGE_SCAN_BATCH = env_int("REGISTRY_USAGE_SCAN_BATCH", 100, minimum=0)
# A scan's soft time limit (the hard one is 30 s later), instead of CELERY_TASK_SOFT_TIME_LIMIT:
# the first scan of a registry with many tags fetches every manifest. Keep the hard limit below
# CELERY_VISIBILITY_TIMEOUT, or Redis hands a long scan to a second worker.
REGISTRY_USAGE_SCAN_TIME_LIMIT = env_int("REGISTRY_USAGE_SCAN_TIME_LIMIT", 300, minimum=1)
# The hard limit, in bytes, of every registry whose organization and cluster set no quota
# (docs/quotas.md); unset: no limit.
REGISTRY_QUOTA_DEFAULT_BYTES: int | None = env("REGISTRY_QUOTA_DEFAULT_BYTES", None, _quota_bytes)
