"""``manage.py probe worker|beat``: the liveness of the Celery worker and beat, from heartbeats
their own loops stamp."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from controlplane.celery import app
from controlplane.probes import BEAT, WORKER, HeartbeatScheduler, heartbeat, heartbeat_path
from tests.support.processes import ROOT


@pytest.fixture
def heartbeats(settings, tmp_path) -> Path:
    settings.PROBE_HEARTBEAT_DIR = str(tmp_path)
    return tmp_path


@pytest.mark.parametrize("role", [WORKER, BEAT])
def test_no_heartbeat_is_not_alive(heartbeats, role) -> None:
    with pytest.raises(CommandError, match=f"{role}: no heartbeat at "):
        call_command("probe", role)


@pytest.mark.parametrize("role", [WORKER, BEAT])
def test_a_fresh_heartbeat_is_alive(heartbeats, role, capsys) -> None:
    heartbeat(role)

    call_command("probe", role)

    assert f"{role}: alive" in capsys.readouterr().out


def test_a_stale_heartbeat_is_not_alive(heartbeats) -> None:
    heartbeat(WORKER)
    old = time.time() - 300
    os.utime(heartbeat_path(WORKER), (old, old))

    with pytest.raises(CommandError, match="last heartbeat 300 s ago"):
        call_command("probe", WORKER)
    call_command("probe", WORKER, "--max-age", "400")


def test_beats_scheduler_stamps_on_every_tick(heartbeats, tmp_path) -> None:
    scheduler = HeartbeatScheduler(app, schedule_filename=str(tmp_path / "schedule"), lazy=True)
    scheduler.setup_schedule()
    try:
        scheduler.tick()
    finally:
        scheduler.close()

    assert heartbeat_path(BEAT).exists()


@pytest.mark.integration
def test_a_running_worker_is_alive_and_a_stopped_one_is_not(start_worker) -> None:
    """The exact command a Kubernetes exec probe runs, against a real worker."""
    command = [sys.executable, "manage.py", "probe", "worker"]
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings_test"}
    worker = start_worker()

    started = time.monotonic()
    alive = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    took = time.monotonic() - started
    worker.stop()
    stopped = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)

    assert (alive.returncode, alive.stdout.split("(")[0]) == (0, "worker: alive "), alive.stderr
    assert took < 10
    assert stopped.returncode == 1
    assert "worker: no heartbeat" in stopped.stderr


@pytest.mark.parametrize(
    ("state", "says"),
    [("active", "active: holds the lock"), ("standby", "standby: healthy, takes over")],
)
def test_an_active_beat_and_a_standby_are_both_alive_and_say_which(
    heartbeats, state, says, capsys
) -> None:
    """Several beats on Redis: one active, the others standbys (controlplane/beat.py)."""
    heartbeat(BEAT, state)

    call_command("probe", BEAT)

    assert capsys.readouterr().out.startswith(f"beat: alive (heartbeat 0 s ago), {says}")
    assert not [p for p in heartbeats.iterdir() if p.name.startswith(".")]  # replaced whole
