"""Settings for the test suite: the production settings, with the suite's own local state.

The broker folder and registry storage are moved aside so that tests never share messages or
images with a `make run` on the same checkout. DATABASE_URL, CELERY_BROKER_URL and REDIS_URL are
honoured as everywhere else; CI sets them to PostgreSQL and Redis.
"""

import os
from pathlib import Path

_var = Path(os.environ.get("CONTROLPLANE_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
os.environ.setdefault("CELERY_FILESYSTEM_DIR", str(_var / "test-celery"))
os.environ.setdefault("REGISTRY_STORAGE_DIR", str(_var / "test-registry"))

from controlplane.settings import *  # noqa: E402, F403

# Operators' passwords in tests need no key stretching.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
