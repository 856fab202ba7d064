"""``celery beat`` keeps its schedule where CELERY_BEAT_SCHEDULE_FILENAME says, and nothing under
var/: in a container the application's folder is read-only, and only the configured path (a
volume) is writable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.controlplane.test_env import PRODUCTION
from tests.support.processes import stop_process, wait_until
from tests.support.stack import inherited_environment

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration  # starts celery beat
def test_beat_writes_its_schedule_to_the_configured_path_and_nothing_under_var(
    tmp_path: Path,
) -> None:
    var_dir = tmp_path / "var"  # absent, and must stay so
    schedule = tmp_path / "state" / "celerybeat-schedule"
    schedule.parent.mkdir()
    log_path = tmp_path / "beat.log"
    environment = {
        **inherited_environment(),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        **PRODUCTION,
        # Messages beat sends go nowhere: no worker of the suite may receive them.
        "CELERY_BROKER_URL": "memory://",
        "CONTROLPLANE_VAR_DIR": str(var_dir),
        "CELERY_BEAT_SCHEDULE_FILENAME": str(schedule),
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlplane", "beat", "--loglevel", "INFO"],
            cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(
            lambda: beat.poll() is not None or "beat: Starting..." in log_path.read_text(),
            timeout=30,
            what="celery beat to start",
        )
        assert beat.poll() is None, log_path.read_text()
        wait_until(lambda: list(schedule.parent.iterdir()), timeout=10, what="the schedule file")
    finally:
        stop_process(beat)

    output = log_path.read_text()
    assert not var_dir.exists(), output
    assert all(p.name.startswith("celerybeat-schedule") for p in schedule.parent.iterdir())
    # DEBUG off: the log is JSON lines (Celery's banner goes to stdout as text).
    starting = [line for line in output.splitlines() if "beat: Starting..." in line]
    assert [json.loads(line)["logger"] for line in starting] == ["celery.beat"], output
