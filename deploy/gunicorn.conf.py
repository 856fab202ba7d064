"""gunicorn's configuration for the web process: ``gunicorn -c deploy/gunicorn.conf.py``.

Everything an operator sizes comes from the environment (docs/operations.md#running-in-production):

- ``PORT`` (8000) and ``GUNICORN_BIND_HOST`` (0.0.0.0: inside a container or pod, the platform
  decides who reaches it), or ``GUNICORN_BIND`` for a full address (``unix:/run/cp.sock``);
- ``WEB_CONCURRENCY`` worker processes (2) with ``GUNICORN_THREADS`` threads each (4): requests
  spend most of their time waiting on PostgreSQL, Redis or the registry, so threads serve them
  cheaply; processes add CPU and isolation;
- ``GUNICORN_TIMEOUT`` (30 s) before a silent worker is killed and replaced, and
  ``GUNICORN_GRACEFUL_TIMEOUT`` (30 s) for requests in flight at a restart or scale-down;
- ``GUNICORN_MAX_REQUESTS`` (1000, with jitter): a worker is replaced after that many requests,
  which bounds any slow leak.

Access logs go to stderr with the request's duration; the application's own records go through
Django's LOGGING. ``X-Forwarded-*`` headers are trusted from ``FORWARDED_ALLOW_IPS`` (gunicorn's
own variable; 127.0.0.1 by default). With ``PROMETHEUS_MULTIPROC_DIR`` set, a worker that exits
is marked dead in prometheus-client's multiprocess files, so /metrics stops counting its gauges.
"""

from __future__ import annotations

import os
from typing import Any

wsgi_app = "controlplane.wsgi:application"

bind = [
    os.environ.get("GUNICORN_BIND")
    or f"{os.environ.get('GUNICORN_BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 - a container's port
]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = max_requests // 10
# Load the application once, in the master: workers fork with Django set up, and a broken
# configuration (a missing variable) stops the master at start-up instead of looping workers.
preload_app = True
# Heartbeat files in memory, not on a possibly read-only or slow disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - gunicorn's documented choice
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def child_exit(server: Any, worker: Any) -> None:
    """prometheus-client's multiprocess mode: forget a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from prometheus_client import multiprocess
        except ImportError:  # metrics not installed: nothing to clean up
            return
        multiprocess.mark_process_dead(worker.pid)
