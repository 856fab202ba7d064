"""Settings for the test suite: the production settings, with the suite's own local state.

The broker folder, registry storage and registry keys are moved aside so that tests never share
messages, images or keys with a `make run` on the same checkout. DATABASE_URL, CELERY_BROKER_URL
and REDIS_URL are honoured as everywhere else; CI sets them to PostgreSQL and Redis.
"""

import os
import socket
from pathlib import Path

# The tests run as development does (DEBUG unset means production since issue 14): the embedded
# defaults for what a test does not set; child processes (Celery workers) inherit it.
os.environ.setdefault("DJANGO_DEBUG", "true")
_var = Path(os.environ.get("CONTROLPLANE_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
os.environ.setdefault("CELERY_FILESYSTEM_DIR", str(_var / "test-celery"))
os.environ.setdefault("REGISTRY_STORAGE_DIR", str(_var / "test-registry"))
os.environ.setdefault("REGISTRY_KEYS_DIR", str(_var / "test-registry-keys"))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / "test-metrics"))
os.environ.setdefault("PROBE_HEARTBEAT_DIR", str(_var / "test-heartbeat"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The token endpoint, as registries started by the tests name it in their challenges: the
# address of pytest-django's live_server, fixed before anything starts. Child processes (Celery
# workers) inherit these variables, and with them the same realm and keys.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", f"127.0.0.1:{_free_port()}")
os.environ.setdefault(
    "REGISTRY_TOKEN_REALM",
    f"http://{os.environ['DJANGO_LIVE_TEST_SERVER_ADDRESS']}/registry/token",
)

from controlplane.settings import *  # noqa: E402, F403

# Operators' passwords in tests need no key stretching.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The rate limit tests set their own limits; everything else must never meet one.
API_RATE_LIMIT_ORGANIZATION = 100_000
API_RATE_LIMIT_TOKEN = 100_000

# Nothing is collected for the suite (pytest-django runs it with DEBUG off): WhiteNoise looks for
# files per request instead of warning at every start that STATIC_ROOT does not exist. The
# production static files are tested with collectstatic and gunicorn (tests/browser).
WHITENOISE_AUTOREFRESH = True
