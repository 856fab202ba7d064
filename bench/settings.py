"""The product's settings plus the bench's baselines: the ``bench`` app and its URLs.

Everything else (DEBUG off, PostgreSQL, Redis, the keys) comes from the environment the stack
gives every process (:attr:`bench.stack.Stack.env`), exactly as for ``controlplane.settings``.
"""

from controlplane.settings import *  # noqa: F403
from controlplane.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
ROOT_URLCONF = "bench.urls"
