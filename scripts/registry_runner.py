"""Run one registry replica under the control plane's maintenance windows
(docs/retention.md#replicas). Started by ``scripts/run-registry [--name NAME] CONFIG``, which
has already dropped the REGISTRY_* variables Distribution would read as overrides.

Distribution 2.8 reads ``storage.maintenance.readonly`` only when it starts, so a replica goes
read-only by restarting. This runner supervises ``docker-registry serve``: every
``poll_seconds`` it asks the control plane (``GET .../registry/maintenance`` next to the
notifications endpoint's ``url``, with that endpoint's ``Authorization`` header and
``?service=<auth.token.service>&replica=<name>&mode=<current>``) which mode to be in, and when
told another one it stops the registry (SIGTERM: Distribution finishes the requests in flight
within ``http.draintimeout``) and starts it again on a private (0600) copy of the configuration
with ``storage.maintenance.readonly.enabled`` set accordingly.

It fails closed, since the window's garbage-collect must never run beside a writer: before the
registry's first start it reports ``mode=starting`` and starts in the mode it is told; when the
control plane does not answer then, it starts read-only (pushes need the control plane's tokens
anyway) and switches once told. Later, a control plane that does not answer changes nothing:
the replica keeps its mode, and the runner says so in its log. On a clean exit (SIGTERM or
SIGINT, passed to the registry) it reports ``mode=stopped``, so the control plane stops waiting
for it; a registry that dies on its own leaves its row, which blocks windows until an operator
deletes it. The runner asks beside the notifications endpoint (its URL with the last segment
``maintenance``), with its token: where the registry already sends that token with every event,
and nowhere else. Use https for it wherever the path crosses an untrusted network.

With no notifications endpoint configured (no token to authenticate with) the runner does not
poll: it ``exec``s the registry as the script always did, with a warning that this replica
cannot take part in maintenance windows. Standard library and PyYAML only.
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
#: Reported before the registry's first start, and on a clean exit (the row goes).
STARTING, STOPPED = "starting", "stopped"
#: Until the control plane says otherwise (its answer's ``poll_seconds``).
DEFAULT_POLL_SECONDS = 2.0
#: How long a stopped registry may take beyond its ``http.draintimeout`` before it is killed.
STOP_GRACE_SECONDS = 15.0
#: How long a restarted registry may take to listen before the runner reports its mode anyway.
START_SECONDS = 15.0
#: As registries/registry_config_rules.py parses them (a parity test holds the two together: the
#: runner runs without Django).
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


class Refused(ValueError):
    """A configuration the runner will not poll with; the message says why."""


def control_plane(config: dict[str, Any]) -> ControlPlane | None:
    """Where to ask for the mode, from the configuration: the notifications endpoint's ``url``
    with its last segment ``maintenance`` (where its token is meant to go); None without an
    enabled notifications endpoint with a ``url`` and an ``Authorization`` header, or without a
    token service. ``Refused`` for an endpoint whose url is not an http(s) URL."""
    service = ((config.get("auth") or {}).get("token") or {}).get("service")
    if not isinstance(service, str) or not service:
        return None
    for endpoint in (config.get("notifications") or {}).get("endpoints") or []:
        if not isinstance(endpoint, dict) or endpoint.get("disabled"):
            continue
        values = (endpoint.get("headers") or {}).get("Authorization") or []
        authorization = values[0] if isinstance(values, list) and values else values
        url = endpoint.get("url")
        if not isinstance(authorization, str) or not authorization or not isinstance(url, str):
            continue
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refused(f"notifications endpoint {endpoint.get('name')!r}: {url!r} is no URL")
        path = parts.path.rpartition("/")[0] + "/maintenance"
        return ControlPlane(
            urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")),
            authorization,
            service,
        )
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
            answer = self.request(STARTING)
            self.mode = READ_ONLY if answer is None else answer[0]
            if self.stopping:
                return 0
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
            self.stop_child(signal.SIGTERM)
            shutil.rmtree(self.folder, ignore_errors=True)
            # A clean exit, the registry stopped: the control plane no longer waits for this one
            # (unanswered: its row stays, and blocks windows until deleted or forgotten).
            if self.stopping and self.request(STOPPED) is not None:
                log("info", "registry.runner.deregistered", replica=self.name)

    def started(self) -> subprocess.Popen[bytes]:
        if self.child is None:
            raise RuntimeError("the registry was not started")
        return self.child

    def forward(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def stop_child(self, signum: int) -> None:
        """Stop the registry (if it runs) with ``signum``: killed past its drain and a grace."""
        child = self.child
        if child is None or child.poll() is not None:
            return
        drain = go_seconds((self.config.get("http") or {}).get("draintimeout"), 0.0)
        child.send_signal(signum)
        try:
            child.wait(timeout=drain + STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

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
        if self.stopping:  # SIGTERM came while the previous one stopped: pass it on
            self.child.send_signal(signal.SIGTERM)

    def request(self, mode: str) -> tuple[str, float] | None:
        """Report ``mode``; the mode the control plane wants and its poll interval, or None when
        it does not answer usefully (anything: a broken answer must not end the runner and leave
        the registry unsupervised). Said once in the log, not per poll."""
        query = urllib.parse.urlencode(
            {"service": self.plane.service, "replica": self.name, "mode": mode}
        )
        request = urllib.request.Request(  # noqa: S310 - the notifications endpoint's own scheme and host
            f"{self.plane.url}?{query}", headers={"Authorization": self.plane.authorization}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                answer = json.loads(response.read())
            wanted = answer["mode"]
            if wanted not in (READ_WRITE, READ_ONLY):
                raise ValueError(f"unknown mode {wanted!r}")
            poll = max(0.2, float(answer.get("poll_seconds", DEFAULT_POLL_SECONDS)))
        except Exception as exc:  # noqa: BLE001 - the docstring
            if self.reachable:
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                if isinstance(exc, urllib.error.HTTPError):  # the refusal's JSON message
                    error += f" {exc.read()[:300].decode(errors='replace')}"
                log("warning", "registry.runner.unreachable", replica=self.name, mode=self.mode,
                    url=self.plane.url, error=error)  # fmt: skip
            self.reachable = False
            return None
        if not self.reachable:
            log("info", "registry.runner.reachable", replica=self.name, mode=self.mode)
        self.reachable = True
        return wanted, poll

    def ask(self) -> None:
        """Report the mode; switch when told another one."""
        answer = self.request(self.mode)
        if answer is None:
            return
        wanted, self.poll_seconds = answer
        if wanted != self.mode and not self.stopping:
            self.switch(wanted)

    def switch(self, mode: str) -> None:
        log("info", "registry.runner.switching", replica=self.name, mode=mode, previous=self.mode)
        self.stop_child(signal.SIGTERM)
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
    try:
        plane = control_plane(config)
    except Refused as exc:
        log("error", "registry.runner.refused", config=str(args.config), error=str(exc))
        return 2
    if plane is None:
        log("warning", "registry.runner.unmanaged", config=str(args.config),
            error="no enabled notifications endpoint with a url, an Authorization header and "
            "auth.token.service: this replica cannot take part in maintenance windows, and "
            "garbage collection may run while it writes")  # fmt: skip
        binary = os.environ.get("DOCKER_REGISTRY_BIN", "docker-registry")
        os.execvp(binary, [binary, "serve", str(args.config)])  # noqa: S606
    runner = Runner(args.config, config, plane, replica_name(config, args.name))
    return runner.serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
