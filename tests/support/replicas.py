"""A registry replica as production runs one: ``scripts/run-registry --name NAME CONFIG``, the
runner that asks the control plane (the tests' live server) which mode to be in and restarts
the registry read-only or read-write (docs/retention.md#replicas). Its own storage folder and
port; stopped by its process id (SIGTERM, which the runner passes to the registry, then
deregisters the replica)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from registries.management.commands.registry_config import render_registry_config
from tests.support.integration import require_integration
from tests.support.processes import ROOT, free_port, require_binary, stop_process, wait_until

RUNNER = ROOT / "scripts" / "run-registry"


class RunnerReplica:
    """``scripts/run-registry`` on a configuration rendered from the current settings (the
    notifications endpoint and its token included: the runner polls only with them)."""

    def __init__(self, workdir: Path, name: str, *, data: Path | None = None) -> None:
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.data = data or workdir / f"replica-{name}-data"
        self.config_path = workdir / f"replica-{name}.yml"
        self.log_path = workdir / f"replica-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, config: str | None = None) -> RunnerReplica:
        require_integration("a Distribution registry under scripts/run-registry")
        binary = require_binary("docker-registry", path=os.environ.get("DOCKER_REGISTRY_BIN"))
        self.config_path.write_text(
            config
            or render_registry_config(addr=self.host, storage_dir=str(self.data), log_level="warn")
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own script
                [str(RUNNER), "--name", self.name, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER_REGISTRY_BIN": binary},
            )
        wait_until(self.answers, timeout=15, what=f"the replica {self.name} on {self.host}")
        return self

    def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            pytest.fail(f"run-registry exited: {self.log()[-3000:]}")
        try:
            return requests.get(f"{self.url}/v2/", timeout=1).status_code == 401
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, object]]:
        """The runner's log lines (JSON) whose message is ``name``."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                event = json.loads(line)
                if event.get("message") == name:
                    found.append(event)
        return found

    def wait_mode(self, mode: str, *, timeout: float = 30) -> None:
        """Until the runner has restarted the registry in ``mode`` and it answers."""

        def switched() -> bool:
            started = self.events("registry.runner.started")
            return bool(started) and started[-1]["mode"] == mode and self.answers()

        wait_until(
            switched, timeout=timeout, what=f"{self.name} to run {mode}",
            failure=lambda reason: f"{reason}\n{self.log()[-3000:]}",
        )  # fmt: skip

    def stop(self) -> int | None:
        if self.process is None:
            return None
        status = stop_process(self.process, grace=40)
        self.process = None
        return status
