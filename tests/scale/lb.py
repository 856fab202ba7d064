"""The local load balancer of ``make scale``: nginx (Debian's), its configuration rendered into
the trial's folder.

One nginx, a ``server`` block per service: the API (two gunicorn processes), backend 1's registry
(two ``docker-registry`` replicas on one S3 bucket) and backend 2's (one). Clients, workers and
the registries' token realm know only the load balancer's addresses.

Failover is passive (open-source nginx has no active health checks): a backend that refuses the
connection or fails is marked down for ``fail_timeout`` after ``max_fails`` failures, and the
request goes to the other one (``proxy_next_upstream``). What may be retried on the other backend
is chosen by method, as nginx does by default since 1.9.13 and as we keep it:

- any request whose connection could not be made (``error``/``timeout`` while connecting): it
  never reached the killed process, so even a POST is safe to send again;
- a request already sent to a backend that then died is retried only if it is idempotent (GET,
  HEAD, PUT, DELETE...). A POST (create a cluster, a hosted queue, an agent token) or a PATCH (a
  blob upload's chunk) in flight on a killed process answers 502: it may have been committed, so
  only the client, which can look, decides whether to send it again. ``non_idempotent`` is
  deliberately not in ``proxy_next_upstream``.

No upstream keep-alive for the API: a request on a kept connection to a process that has just
been killed counts as sent (and a POST is then not retried); a new connection per request is
refused at once instead, and retried. The registry's upstream streams request and response
bodies (no buffering, no size limit), as layers are large.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Seconds a backend that failed stays out of rotation, and failures that take it out.
FAIL_TIMEOUT = 2
MAX_FAILS = 1
#: A dead backend's connection is refused at once on 127.0.0.1; an unanswered one is given up on
#: after this, and the request tried on the other backend.
CONNECT_TIMEOUT = 2


@dataclass(frozen=True)
class Upstream:
    """One balanced service: the address nginx listens on, and the backends' addresses."""

    name: str
    listen: str  # host:port
    servers: Sequence[str]  # host:port each
    #: Request bodies streamed, no size limit (a registry's blob uploads).
    streaming: bool = False
    read_timeout: int = 60


def render_nginx_config(workdir: Path, upstreams: Sequence[Upstream], *, user: str = "") -> str:
    """nginx's whole configuration: pid, logs and temporary files under ``workdir``; ``user``
    for the worker processes when nginx starts as root (it drops to ``nobody`` otherwise)."""
    lines = [
        "# Rendered by tests/scale/lb.py for one trial of `make scale`; not hand-edited.",
        "daemon off;",
        "master_process on;",
        "worker_processes 1;",
        f"pid {workdir / 'nginx.pid'};",
        f"error_log {workdir / 'nginx-error.log'} warn;",
    ]
    if user:
        lines.append(f"user {user};")
    lines += [
        "events { worker_connections 2048; }",
        "http {",
        '    log_format scale \'$remote_addr "$request" $status $body_bytes_sent '
        "$request_time upstream=$upstream_addr upstream_status=$upstream_status';",
        f"    access_log {workdir / 'nginx-access.log'} scale;",
    ]
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        lines.append(f"    {kind}_temp_path {workdir / 'nginx-temp' / kind};")
    for upstream in upstreams:
        lines += _upstream(upstream)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _upstream(upstream: Upstream) -> list[str]:
    block = [f"    upstream {upstream.name} {{"]
    block += [
        f"        server {server} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT}s;"
        for server in upstream.servers
    ]
    block += [
        "    }",
        "    server {",
        f"        listen {upstream.listen} backlog=1024;",
        "        location / {",
        f"            proxy_pass http://{upstream.name};",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "            proxy_set_header Host $http_host;",
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "            proxy_set_header X-Forwarded-Proto $scheme;",
        # Not non_idempotent: a POST or PATCH already sent is never sent again (module docstring).
        "            proxy_next_upstream error timeout http_502 http_503;",
        f"            proxy_next_upstream_tries {len(upstream.servers)};",
        f"            proxy_connect_timeout {CONNECT_TIMEOUT}s;",
        f"            proxy_read_timeout {upstream.read_timeout}s;",
        f"            proxy_send_timeout {upstream.read_timeout}s;",
    ]
    if upstream.streaming:
        block += [
            "            client_max_body_size 0;",
            "            proxy_request_buffering off;",
            "            proxy_buffering off;",
        ]
    block += ["        }", "    }"]
    return block
