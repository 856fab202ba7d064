"""Django settings, all read from the environment through ``controlplane.env``.

With no variables set the project runs on its embedded default: SQLite and kombu's filesystem
broker under ``var/``, a local-memory cache, and a registry on 127.0.0.1:5000. ``DATABASE_URL``,
``CELERY_BROKER_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dj_database_url
import django_stubs_ext

from controlplane.audit_settings import *  # noqa: F403, I001 - the audit log's retention
from controlplane.beat_settings import beat_settings
from controlplane.cleanup_settings import *  # noqa: F403 - retention, garbage collection
from controlplane.env import DEBUG as _DEBUG
from controlplane.env import (
    env,
    env_float,
    env_int,
    env_list,
    loopback_address,
    missing_required,
    raise_for_missing,
    string_map,
)
from controlplane.local_state import private_directory
from controlplane.logging import log_format

# The production registry configuration's settings (REGISTRY_STORAGE, REGISTRY_S3_*, ...).
from controlplane.registry_settings import *  # noqa: F403

# Production's security settings: TLS at the proxy, HSTS, secure cookies (from the environment).
from controlplane.security_settings import *  # noqa: F403

# Makes generic Django classes subscriptable at runtime (ModelAdmin[Queue]) for type checking.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state of the embedded default. Production (DJANGO_DEBUG=false) must name its database and
# broker, so nothing is ever written here there.
VAR_DIR = Path(env("CONTROLPLANE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = _DEBUG
SECRET_KEY = env(
    "DJANGO_SECRET_KEY",
    "insecure-development-key-do-not-use-in-production",
    required_in_production=True,
)
ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS",
    ["127.0.0.1", "localhost", "[::1]", "testserver"],
    required_in_production=True,
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "controlplane",
    "clusters",
    "registries",
]

MIDDLEWARE = [
    # /healthz, /readyz and /metrics, answered before host checks and SSL redirects: probes and
    # scrapers reach a pod by its address, over HTTP (controlplane/health.py).
    "controlplane.health.ProbeMiddleware",
    # Before all, so that every answer and every log record of the request has its id.
    "controlplane.request_id.RequestIdMiddleware",
    # First, so that every answer under CORS_URLS_REGEX carries the headers, errors included.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's, Swagger UI's) from the web process itself, before the session:
    # gzip/brotli variants and far-future caching of the hashed names collectstatic writes.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "controlplane.security.ContentSecurityPolicyMiddleware",
    "controlplane.api.middleware.RequestBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The audit log's actor: a fresh scope per request; the console's user (clusters.actors).
    "clusters.actors.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# DATABASE_URL selects PostgreSQL (postgres://user@host:port/name, through psycopg 3). The
# embedded default is a SQLite file; IMMEDIATE transactions and WAL let the web process and the
# Celery worker write to it side by side without "database is locked" errors.
_SQLITE_DEFAULT = f"sqlite:///{VAR_DIR / 'controlplane.sqlite3'}"
# Web processes keep their connection between requests in production (DATABASE_CONN_MAX_AGE,
# 600 s; 0 with DEBUG on, as in the tests): connecting costs more than most requests. A request
# checks it once, before its first query (CONN_HEALTH_CHECKS), so a restarted PostgreSQL costs a
# reconnect, and a request answered from the hot caches reads and pings nothing (a list's page
# is its own check: controlplane.compiled.read_without_ping). Celery workers
# pool theirs instead (controlplane/celery.py).
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", _SQLITE_DEFAULT, required_in_production=True),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0 if _DEBUG else 600),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # var/ and what it holds are the service user's alone (controlplane/local_state.py). A
    # production process missing its DATABASE_URL stops at the end of this file: create nothing.
    if not missing_required():
        private_directory(Path(DATABASES["default"]["NAME"]).parent)
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # The test database is a file, not memory, so that a Celery worker process started by the
    # integration tests sees what the tests commit.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-controlplane.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------------
# Production needs Redis: the cache holds the API rate limit counters that every web process
# shares (and it is the default broker).
REDIS_URL = env("REDIS_URL", "", required_in_production=True)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis that does not answer must not hold requests up (rate limits fail open).
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The per-process caches of the hot paths (controlplane/hotcache.py: the agent environment, the
# token endpoint's principal, webhook secrets): how long an entry may live, which is how long a
# credential revoked in another process or host may still be accepted here; 0 turns them off.
HOT_CACHE_SECONDS = env_float("HOT_CACHE_SECONDS", 5.0)
HOT_CACHE_MAX_ENTRIES = env_int("HOT_CACHE_MAX_ENTRIES", 10_000, minimum=1)

# --- Celery ---------------------------------------------------------------------------------
# CELERY_BROKER_URL (or, failing that, REDIS_URL) selects Redis. The embedded default is kombu's
# filesystem transport: one folder that the web process writes to and the worker reads from.
# Not required by itself: production requires REDIS_URL, which it falls back to.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL or "filesystem://localhost//")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = Path(env("CELERY_FILESYSTEM_DIR", str(VAR_DIR / "celery")))
    for _sub in ("queue", "processed", "control") if not missing_required() else ():
        private_directory(_broker_dir / _sub)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Where kombu keeps its exchange bindings; it defaults to ./control in the working dir.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# A broker that is down must not hang the request that enqueued: the pending row is the durable
# record, so give up quickly and let the row be found again.
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0)
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
# Workers log through LOGGING (key=value fields included), not a handler of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Delivery is at least once, and every task is idempotent (docs/reliability.md explains each of
# these): a message is acknowledged only once its task has finished, so a worker that dies takes
# nothing with it; a worker process killed mid-task (OOM, SIGKILL) gives its message back; each
# worker process reserves one message at a time, so no message waits behind a long task on a
# worker that may die.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90)
# Redis gives an unacknowledged message to another worker after this long: it must exceed the
# longest retry countdown plus the task time limit (a retry waits, reserved and unacknowledged,
# on the worker, then runs), or a task would run twice while its first run is alive.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 600)
if not CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
# A worker or beat that lost Redis tries again at least this often (controlplane.celery).
CELERY_BROKER_RECONNECT_MAX_SECONDS = env_float("CELERY_BROKER_RECONNECT_MAX_SECONDS", 5.0)
# Workers keep their PostgreSQL connections in a pool of at most this many, checked before each
# reuse, so a restarted PostgreSQL costs one reconnect (controlplane/celery.py).
CELERY_WORKER_DATABASE_POOL_SIZE = env_int("CELERY_WORKER_DATABASE_POOL_SIZE", 8)

# Two queues: "celery" for provisioning and every other task, "canaries" for the health canaries
# and usage scans, so a new cluster's registry never waits behind them. A worker started without
# --queues consumes both (make run, the tests); deploy/entrypoint's worker takes
# CELERY_WORKER_QUEUES, and Kubernetes runs the canaries in a worker of their own
# (docs/reliability.md, "Health canaries").
CELERY_TASK_DEFAULT_QUEUE = "celery"
CANARY_QUEUE = "canaries"
CELERY_TASK_QUEUES = {
    queue: {"exchange": queue, "routing_key": queue}
    for queue in (CELERY_TASK_DEFAULT_QUEUE, CANARY_QUEUE, MAINTENANCE_QUEUE)  # noqa: F405
}
CELERY_TASK_ROUTES = {
    name: {"queue": CANARY_QUEUE}
    for name in ("registries.canaries", "registries.canary", "registries.usage_scan")
} | CLEANUP_TASK_ROUTES  # noqa: F405

# Celery beat (one active, standbys; docs/reliability.md): reconciler, canaries, usage scans,
# the notifications' sweep, the audit log's retention.
# A beat message still queued when the next one is due has nothing left to add: it expires.
REGISTRY_RECONCILE_INTERVAL_SECONDS = env_float("REGISTRY_RECONCILE_INTERVAL_SECONDS", 30.0)
REGISTRY_CANARY_INTERVAL_SECONDS = env_float("REGISTRY_CANARY_INTERVAL_SECONDS", 60.0)
# Each canary round runs one canary per registry backend, plus the canaries of at most
# REGISTRY_CANARY_SAMPLE ready registries whose namespace is due; each one checked is due again
# REGISTRY_CANARY_PERIOD_SECONDS later. Every ready registry's namespace is checked at least every
# max(period, ceil(ready registries / sample) rounds) (docs/reliability.md, "Health canaries").
REGISTRY_CANARY_SAMPLE = env_int("REGISTRY_CANARY_SAMPLE", 100, minimum=0)
REGISTRY_CANARY_PERIOD_SECONDS = env_float("REGISTRY_CANARY_PERIOD_SECONDS", 3600.0)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    task: {"task": task, "schedule": every, "options": {"expires": every}}
    for task, every in (
        ("registries.reconcile", REGISTRY_RECONCILE_INTERVAL_SECONDS),
        ("registries.canaries", REGISTRY_CANARY_INTERVAL_SECONDS),
        ("registries.usage_scans", REGISTRY_USAGE_SCAN_ROUND_SECONDS),  # noqa: F405
        ("registries.notifications-sweep", REGISTRY_NOTIFICATIONS_SWEEP_SECONDS),  # noqa: F405
        ("clusters.audit_prune", AUDIT_PRUNE_INTERVAL_SECONDS),  # noqa: F405 - audit_settings
        *CLEANUP_BEAT,  # noqa: F405 - cleanup_settings
    )
}
# Where beat keeps its schedule's state (last run times) without Redis (with Redis, RedBeat keeps
# it there). Set it, if used, to a writable path (an emptyDir): beat writes nowhere else.
CELERY_BEAT_SCHEDULE_FILENAME = env(
    "CELERY_BEAT_SCHEDULE_FILENAME", str(VAR_DIR / "celerybeat-schedule")
)
# Beat's scheduler, stamping a heartbeat for `manage.py probe beat`: RedBeat's, one active beat
# and standbys, where the broker is Redis; Celery's schedule file otherwise (beat_settings.py).
globals().update(beat_settings(CELERY_BROKER_URL))

# --- Registry -------------------------------------------------------------------------------
# REGISTRY_URL is where the control plane reaches the registry's HTTP API. REGISTRY_PUBLIC_HOST is
# the host[:port] that jobs push to; it prefixes every BUILDKITE_HOSTED_REGISTRY_URL.
REGISTRY_DRIVER = env("REGISTRY_DRIVER", "distribution")
REGISTRY_URL = env("REGISTRY_URL", "http://127.0.0.1:5000").rstrip("/")
REGISTRY_PUBLIC_HOST = env("REGISTRY_PUBLIC_HOST", REGISTRY_URL.split("://", 1)[-1])
REGISTRY_HTTP_TIMEOUT = env_float("REGISTRY_HTTP_TIMEOUT", 5.0)
# How long a worker reuses a passing check of the registry (GET /v2/ demands and accepts our
# tokens) for provisioning, instead of asking again for every registry; 0 checks every time.
REGISTRY_CHECK_CACHE_SECONDS = env_float("REGISTRY_CHECK_CACHE_SECONDS", 5.0)
# Registry backends (registries.RegistryBackend; the "default" one follows REGISTRY_URL,
# REGISTRY_PUBLIC_HOST and REGISTRY_TOKEN_SERVICE): how long a process keeps its copy of the
# backends; how new registries are placed ("weighted": weighted rendezvous hashing of the
# cluster id, or "least_loaded": fewest registries relative to weight); and the labels a backend
# must carry to take new registries (JSON object, e.g. {"region": "eu-west"}; empty: any).
REGISTRY_BACKENDS_CACHE_SECONDS = env_float("REGISTRY_BACKENDS_CACHE_SECONDS", 5.0)
REGISTRY_PLACEMENT = env("REGISTRY_PLACEMENT", "weighted")
REGISTRY_PLACEMENT_LABELS: dict[str, str] = env("REGISTRY_PLACEMENT_LABELS", {}, string_map)
REGISTRY_STORAGE_DIR = env("REGISTRY_STORAGE_DIR", str(VAR_DIR / "registry" / "data"))
# Distribution's debug listener (pprof, expvar: no authentication) in the generated registry
# configuration: none unless set, and then only on loopback (host:port; refused otherwise).
REGISTRY_DEBUG_ADDR = env("REGISTRY_DEBUG_ADDR", "", loopback_address)
REGISTRY_PROVISION_MAX_ATTEMPTS = env_int("REGISTRY_PROVISION_MAX_ATTEMPTS", 6)
REGISTRY_PROVISION_BACKOFF_SECONDS = env_float("REGISTRY_PROVISION_BACKOFF_SECONDS", 2.0)
REGISTRY_PROVISION_BACKOFF_MAX_SECONDS = env_float("REGISTRY_PROVISION_BACKOFF_MAX_SECONDS", 120.0)
# The reconciler retries a registry that failed because the registry did not answer, this long
# after it failed, once the registry answers again. It repairs at most this many of each kind of
# drift per pass (the rest in the next pass).
REGISTRY_FAILED_RETRY_AFTER_SECONDS = env_float("REGISTRY_FAILED_RETRY_AFTER_SECONDS", 300.0)
REGISTRY_RECONCILE_BATCH = env_int("REGISTRY_RECONCILE_BATCH", 500)
# The reconciler's two sweeps (clusters owed a registry, published URLs) read this many rows of
# their table per pass, going on where the last pass stopped (docs/reliability.md).
REGISTRY_RECONCILE_SWEEP = env_int("REGISTRY_RECONCILE_SWEEP", 2000, minimum=1)

# --- Registry tokens ------------------------------------------------------------------------
# Realm, service, issuer, lifetimes, the signing keys' KEK: controlplane/token_settings.py (here,
# in this order, so that a production start names the missing variables in the order of .env).
from controlplane.token_settings import *  # noqa: E402, F403

# The folder of the CA's files: ca.key (only where signing keys are issued: the keys Job,
# `make run`) and ca.crt (the registries' rootcertbundle). Web and worker processes read no file
# there (the signing keys are in the database); the setting stays required so that it is named.
REGISTRY_KEYS_DIR = env(
    "REGISTRY_KEYS_DIR", str(VAR_DIR / "registry" / "keys"), required_in_production=True
)

# --- API ------------------------------------------------------------------------------------
API_PAGE_SIZE = 30
API_MAX_PAGE_SIZE = 100
# Requests per minute, per organization and per API token (Buildkite's defaults: 200 and 50).
API_RATE_LIMIT_ORGANIZATION = env_int("API_RATE_LIMIT_ORGANIZATION", 200)
API_RATE_LIMIT_TOKEN = env_int("API_RATE_LIMIT_TOKEN", 50)
API_RATE_LIMIT_KEY_PREFIX = "ratelimit"
# The largest request body any endpoint takes (clusters and queues are small JSON objects).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# How many proxies in front of the service append to X-Forwarded-For; 0: the connection's
# address is the client's (controlplane/api/client_ip.py; agent token IP allow-lists use it).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
# CORS on the REST API, as Buildkite has it: any origin may call it (a bearer token, not a
# cookie, authenticates: no credentials mode), and a page may read the pagination and rate limit
# headers. Not the webhook (server to server), not the admin, not the agent endpoints.
CORS_ALLOW_ALL_ORIGINS = True
CORS_ALLOW_CREDENTIALS = False
CORS_URLS_REGEX = r"^/v2/(?!webhooks/)"
CORS_EXPOSE_HEADERS = [
    "Link",
    *(
        f"{prefix}-{name}"
        for prefix in ("RateLimit", "RateLimit-User")
        for name in ("Scope", "Limit", "Remaining", "Reset", "Warning")
    ),
    "Retry-After",
]

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's, reading through the one JSON reader (NaN, infinities, deep nesting: 400).
    "DEFAULT_PARSER_CLASSES": ["controlplane.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "controlplane.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Cluster registry control plane API",
    "DESCRIPTION": (
        "Buildkite-compatible REST API for clusters, queues and cluster agent tokens, plus each "
        "cluster's container registry. Authenticate with `Authorization: Bearer <API token>`."
    ),
    "VERSION": "2",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/v2/",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from this service: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["controlplane.api.schema.only_the_rest_api"],
    # Two resources have a `state` of their own: each its own enum, named for what it is.
    "ENUM_NAME_OVERRIDES": {
        "RegistryStateEnum": "registries.models.State",
        "RegistryBackendStateEnum": "registries.models.BackendState",
        **CLEANUP_ENUM_NAME_OVERRIDES,  # noqa: F405 - cleanup_settings
    },
}

# --- Internationalisation, static files -----------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# `manage.py collectstatic` writes here (the image does it at build time); WhiteNoise serves it.
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "static")))
if not DEBUG:
    # Content-hashed names, compressed copies, cached for a year by browsers. It needs the
    # manifest collectstatic writes: a production process serves only collected files.
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {
            "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage",
        },
    }

# --- Health and metrics (docs/operations.md#health-and-probes) ------------------------------
# /readyz gives each check this long. /metrics answers only `Authorization: Bearer
# <METRICS_TOKEN>`, and 404 without one. Every process writes its metrics into
# PROMETHEUS_MULTIPROC_DIR and /metrics adds them up; prometheus-client reads the variable when
# it is first imported, after the settings. The worker and beat stamp heartbeats in
# PROBE_HEARTBEAT_DIR for `manage.py probe`.
HEALTH_CHECK_TIMEOUT_SECONDS = env_float("HEALTH_CHECK_TIMEOUT_SECONDS", 2.0)
METRICS_TOKEN = env("METRICS_TOKEN", "")
# A Celery worker or beat serves its host's metrics on this port too (0: not at all).
METRICS_PORT = env_int("METRICS_PORT", 0)
PROMETHEUS_MULTIPROC_DIR = env(
    "PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics") if DEBUG else ""
)
if PROMETHEUS_MULTIPROC_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
    private_directory(Path(PROMETHEUS_MULTIPROC_DIR))
PROBE_HEARTBEAT_DIR = env("PROBE_HEARTBEAT_DIR", str(VAR_DIR) if DEBUG else tempfile.gettempdir())

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", "INFO")
# "json" (one JSON object per line, the default when DEBUG is off) or "text" (key=value lines).
LOG_FORMAT = env("LOG_FORMAT", "text" if DEBUG else "json", log_format)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "controlplane.logging.KeyValueFormatter"},
        "json": {"()": "controlplane.logging.JsonLinesFormatter"},
    },
    "filters": {
        "context": {"()": "controlplane.logging.ContextFilter"},
        "redact": {"()": "controlplane.logging.RedactSecretsFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- Required variables ---------------------------------------------------------------------
# Last, after every variable has been read: one message names every required variable that is
# missing (controlplane.env), rather than one per start-up attempt. Keep this at the end.
raise_for_missing()
