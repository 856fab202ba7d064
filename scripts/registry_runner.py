"""Run one registry replica under the control plane's maintenance windows
(docs/retention.md#replicas). Started by ``scripts/run-registry [--name NAME] CONFIG``, which
has already dropped the REGISTRY_* variables Distribution would read as overrides.

Distribution 2.8 reads ``storage.maintenance.readonly`` only when it starts, so a replica goes
read-only by restarting. This runner supervises ``docker-registry serve``: every
``poll_seconds`` it asks the control plane (``GET /registry/maintenance`` on the origin of
``auth.token.realm``, with the notifications endpoint's ``Authorization`` header and
``?service=<auth.token.service>&replica=<name>&mode=<current>``) which mode to be in, and when
told another one it stops the registry (SIGTERM: Distribution finishes the requests in flight
within ``http.draintimeout``) and starts it again on a private (0600) copy of the configuration
with ``storage.maintenance.readonly.enabled`` set accordingly. A control plane that does not
answer changes nothing: the replica keeps its mode, and the runner says so in its log.

With no notifications endpoint configured (no token to authenticate with) the runner does not
poll: it ``exec``s the registry as the script always did. SIGTERM and SIGINT are passed to the
registry, and the runner exits with its status. Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

READ_WRITE, READ_ONLY = "readwrite", "readonly"
#: Until the control plane says otherwise (its answer's ``poll_seconds``).
DEFAULT_POLL_SECONDS = 2.0
#: How long a stopped registry may take beyond its ``http.draintimeout`` before it is killed.
STOP_GRACE_SECONDS = 15.0
#: How long a restarted registry may take to listen before the runner reports its mode anyway.
START_SECONDS = 15.0
GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def log(level: str, event: str, **fields: Any) -> None:
    """One JSON line on stderr, as the control plane's own logs (``logger`` names the runner)."""
    line = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": "registries.runner",
        "message": event,
        **fields,
    }
    print(json.dumps(line, default=str), file=sys.stderr, flush=True)


def go_seconds(text: Any, default: float) -> float:
    """A Go duration (``30s``, ``1m30s``) in seconds; ``default`` for anything else."""
    if not isinstance(text, str) or not text:
        return default
    parts = GO_DURATION.findall(text)
    return sum(float(n) * GO_UNITS[u] for n, u in parts) if parts else default


@dataclass(frozen=True)
class ControlPlane:
    url: str  # .../registry/maintenance
    authorization: str
    service: str


def control_plane(config: dict[str, Any]) -> ControlPlane | None:
    """Where to ask for the mode, from the configuration; None without an enabled notifications
    endpoint with an ``Authorization`` header, or without a token realm and service."""
    token = (config.get("auth") or {}).get("token") or {}
    realm, service = token.get("realm"), token.get("service")
    if not isinstance(realm, str) or not isinstance(service, str):
        return None
    for endpoint in (config.get("notifications") or {}).get("endpoints") or []:
        if not isinstance(endpoint, dict) or endpoint.get("disabled"):
            continue
        values = (endpoint.get("headers") or {}).get("Authorization") or []
        authorization = values[0] if isinstance(values, list) and values else values
        parts = urllib.parse.urlsplit(realm)
        if isinstance(authorization, str) and authorization and parts.scheme in ("http", "https"):
            url = urllib.parse.urlunsplit(
                (parts.scheme, parts.netloc, "/registry/maintenance", "", "")
            )
            return ControlPlane(url, authorization, service)
    return None


def replica_name(config: dict[str, Any], given: str | None) -> str:
    """``--name``, else this host's name and the port of ``http.addr``."""
    if given:
        return given
    addr = str((config.get("http") or {}).get("addr") or ":5000")
    return f"{socket.gethostname()}:{addr.rpartition(':')[2]}"


def local_address(config: dict[str, Any]) -> tuple[str, int] | None:
    """Where the registry listens, as this host reaches it (for the wait after a restart)."""
    host, _, port = str((config.get("http") or {}).get("addr") or "").rpartition(":")
    if not port.isdigit():
        return None
    host = host.strip("[]")
    return ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host), int(port)  # noqa: S104


class Runner:
    """The supervised registry and the mode it runs in."""

    def __init__(self, config_path: Path, config: dict[str, Any], plane: ControlPlane, name: str):
        self.config_path, self.config, self.plane, self.name = config_path, config, plane, name
        self.binary = os.environ.get("DOCKER_REGISTRY_BIN", "docker-registry")
        self.folder = Path(tempfile.mkdtemp(prefix="run-registry-"))  # 0700
        self.poll_seconds = DEFAULT_POLL_SECONDS
        readonly = ((config.get("storage") or {}).get("maintenance") or {}).get("readonly") or {}
        self.mode = READ_ONLY if readonly.get("enabled") else READ_WRITE
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.reachable = True

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self.forward)
        signal.signal(signal.SIGINT, self.forward)
        try:
            self.start()
            while True:
                try:
                    returncode = self.started().wait(timeout=self.poll_seconds)
                except subprocess.TimeoutExpired:
                    self.ask()
                    continue
                if not self.stopping:
                    log("error", "registry.runner.exited", replica=self.name, status=returncode)
                return 128 - returncode if returncode < 0 else returncode
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def started(self) -> subprocess.Popen[bytes]:
        if self.child is None:
            raise RuntimeError("the registry was not started")
        return self.child

    def forward(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def start(self) -> None:
        """Serve a private copy of the configuration with the current mode."""
        config = json.loads(json.dumps(self.config))  # a deep copy of plain data
        storage = config.setdefault("storage", {})
        maintenance = storage.setdefault("maintenance", None) or {}
        storage["maintenance"] = maintenance
        readonly = maintenance.get("readonly") or {}
        readonly["enabled"] = self.mode == READ_ONLY
        maintenance["readonly"] = readonly
        copy = self.folder / "config.yml"
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            yaml.safe_dump(config, file, sort_keys=False)
        self.child = subprocess.Popen([self.binary, "serve", str(copy)])  # noqa: S603
        log(
            "info", "registry.runner.started", replica=self.name, mode=self.mode,
            pid=self.child.pid, config=str(copy),
        )  # fmt: skip

    def ask(self) -> None:
        """Report the mode; switch when told another one."""
        query = urllib.parse.urlencode(
            {"service": self.plane.service, "replica": self.name, "mode": self.mode}
        )
        request = urllib.request.Request(  # noqa: S310 - http(s), the token realm's origin
            f"{self.plane.url}?{query}", headers={"Authorization": self.plane.authorization}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                answer = json.loads(response.read())
            wanted = answer["mode"]
            self.poll_seconds = max(0.2, float(answer.get("poll_seconds", DEFAULT_POLL_SECONDS)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if self.reachable:
                log("warning", "registry.runner.unreachable", replica=self.name, mode=self.mode,
                    url=self.plane.url, error=str(exc)[:300])  # fmt: skip
            self.reachable = False
            return
        if not self.reachable:
            log("info", "registry.runner.reachable", replica=self.name, mode=self.mode)
        self.reachable = True
        if wanted in (READ_WRITE, READ_ONLY) and wanted != self.mode and not self.stopping:
            self.switch(wanted)

    def switch(self, mode: str) -> None:
        log("info", "registry.runner.switching", replica=self.name, mode=mode, previous=self.mode)
        child = self.started()
        drain = go_seconds((self.config.get("http") or {}).get("draintimeout"), 0.0)
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=drain + STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if self.stopping:  # asked to stop while it stopped: stay stopped
            return
        self.mode = mode
        self.start()
        self.wait_listening()
        self.ask()  # report the new mode at once

    def wait_listening(self) -> None:
        address = local_address(self.config)
        deadline = time.monotonic() + START_SECONDS
        while address is not None and time.monotonic() < deadline:
            if self.child is None or self.child.poll() is not None:
                return
            try:
                with socket.create_connection(address, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run-registry", description=__doc__.split("\n")[0])
    parser.add_argument("--name", help="this replica's name (default: hostname:port)")
    parser.add_argument("config", type=Path, help="the registry's configuration file")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text()) or {}
    plane = control_plane(config)
    if plane is None:
        binary = os.environ.get("DOCKER_REGISTRY_BIN", "docker-registry")
        os.execvp(binary, [binary, "serve", str(args.config)])  # noqa: S606
    runner = Runner(args.config, config, plane, replica_name(config, args.name))
    return runner.serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
